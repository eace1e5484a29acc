"""Majority voting and its tie-break; n sampled paths in one engine request with the real SmolLM2."""
from __future__ import annotations

import pytest

from temper.prompts.cot import reasoning_prompt
from temper.prompts.self_consistency import majority_vote, self_consistency


@pytest.mark.parametrize("answers, answer, count, tied", [
    (["8", "8", "6", "8", "5"], "8", 3, ("8",)),
    (["6", "8", "8", "6"], "6", 2, ("6", "8")),  # tie: the answer seen first wins
    (["8", "6", "6", "8"], "8", 2, ("8", "6")),
    ([None, "3", None, None], "3", 1, ("3",)),  # unparsable paths never win but count in n
    (["1", "2", "3"], "1", 1, ("1", "2", "3")),
    ([None, None], None, 0, ()),
    ([], None, 0, ()),
])
def test_majority_vote(answers, answer, count, tied):
    vote = majority_vote(answers)
    assert (vote.answer, vote.count, vote.tied) == (answer, count, tied)
    assert vote.is_tie == (len(tied) > 1)
    assert vote.agreement == (count / len(answers) if answers else 0.0)


def test_agreement_counts_unparsable_paths():
    assert majority_vote(["3", None, None, "3"]).agreement == 0.5


def test_paths_share_one_request(llm):
    prompts = [reasoning_prompt("A pen costs $2. How much do 4 pens cost?"), reasoning_prompt("What is 3 + 4?")]
    first = self_consistency(llm, prompts, n=4, max_tokens=24, seed=7)
    again = self_consistency(llm, prompts, n=4, max_tokens=24, seed=7)
    for result, prompt in zip(first, prompts):
        assert len(result.texts) == len(result.answers) == 4
        assert len(set(result.texts)) > 1  # sampled, not 4 copies of one greedy path
        assert result.num_prompt_tokens == len(llm.encode(prompt))  # one prompt per question, not 4
        assert 0 < result.num_generated_tokens <= 4 * 24
        vote = majority_vote(result.answers)
        assert (result.answer, result.agreement, result.tied) == (vote.answer, vote.agreement, vote.tied)
    assert [r.texts for r in first] == [r.texts for r in again]  # the seed makes the paths reproducible
