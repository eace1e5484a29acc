"""The batched sampler against hand-computed distributions, formulas and transformers' processors."""
from __future__ import annotations

import math

import pytest
import torch

from temper.engine.sampler import (TOP_P_WIDTHS, Sampler, SamplingRow, _draw, _top_p_thresholds, check_token_ids,
                                   process_logits, prompt_logprobs, token_logprobs)
from temper.engine.sampling_params import SamplingParams
from tests.helpers import assert_close

EOS = frozenset({0})
# chi-square critical values at p = 0.001 by degrees of freedom: a correct sampler fails one test in a thousand
# seeds, and the seeds here are fixed
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88}
LOGITS = torch.tensor([2.0, 1.5, 0.3, -0.4, 1.1, -2.0, 0.8, 0.05, -1.0, 1.9])  # distinct: no ties


def row(token_ids=(5, 6), num_prompt_tokens=1, generator=None, grammar=None, eos=EOS, **kw) -> SamplingRow:
    return SamplingRow(SamplingParams(**kw), list(token_ids), num_prompt_tokens, generator, grammar, eos)


def reference_probs(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    """The filtered distribution, computed token by token in float64 in the documented order."""
    p = torch.softmax(logits.double() / temperature, dim=-1)
    order = sorted(range(len(p)), key=lambda i: -p[i].item())
    keep = set(order[:top_k] if top_k else order)
    if top_p < 1.0:
        total = sum(p[i].item() for i in keep)
        cum, nucleus = 0.0, set()
        for i in (i for i in order if i in keep):
            if cum >= top_p:
                break
            nucleus.add(i)
            cum += p[i].item() / total
        keep = nucleus
    best = max(p[i].item() for i in keep)
    keep = {i for i in keep if p[i].item() >= min_p * best}
    q = torch.tensor([p[i].item() if i in keep else 0.0 for i in range(len(p))], dtype=torch.float64)
    return q / q.sum()


def sample_counts(logits: torch.Tensor, n: int, seed: int = 0, **kw) -> torch.Tensor:
    """Counts of n draws, as one batch of n identical rows."""
    out = Sampler(seed=seed)(logits.expand(n, -1), [row(**kw) for _ in range(n)])
    return torch.bincount(torch.tensor(out.token_ids), minlength=logits.shape[-1]).double()


def assert_matches(counts: torch.Tensor, probs: torch.Tensor) -> None:
    """No draw outside the support, and a chi-square test inside it."""
    support = probs > 0
    assert counts[~support].sum() == 0, f"sampled filtered-out tokens {torch.nonzero(counts * ~support).tolist()}"
    expected = probs[support] * counts.sum()
    chi2 = ((counts[support] - expected) ** 2 / expected).sum().item()
    df = int(support.sum()) - 1
    print(f"chi2 {chi2:.2f} with {df} degrees of freedom")
    if df:
        assert chi2 < CHI2_999[df], f"frequencies {counts.tolist()} do not fit {probs.tolist()} (chi2 {chi2:.1f})"


def test_greedy_is_argmax_for_any_dtype():
    torch.manual_seed(0)
    logits = torch.randn(6, 1000)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = logits.to(dtype)
        out = Sampler()(x, [row(temperature=0.0) for _ in range(6)])
        assert out.token_ids == x.float().argmax(-1).tolist()
        assert out.logprobs == [None] * 6


def test_greedy_applies_bias_and_penalties():
    logits = LOGITS[None].clone()
    # the bias moves the argmax from token 0 to token 3 (2.6); the repetition penalty then halves 3 to 1.3
    biased = row(temperature=0.0, logit_bias={3: 3.0})
    assert Sampler()(logits, [biased]).token_ids == [3]
    penalized = row(temperature=0.0, logit_bias={3: 3.0}, repetition_penalty=2.0, token_ids=[3, 5])
    assert Sampler()(logits, [penalized]).token_ids == [0]
    frequency = row(temperature=0.0, logit_bias={0: -1.0}, frequency_penalty=0.3, token_ids=[4, 9, 9])
    assert Sampler()(logits, [frequency]).token_ids == [1]  # 0: 2 - 1 = 1, 9: 1.9 - 2 * 0.3 = 1.3, 1: 1.5


@pytest.mark.parametrize("kw", [dict(top_k=1), dict(top_p=1e-6), dict(min_p=1.0), dict(top_p=1e-3, temperature=2.0)])
def test_filters_that_keep_one_token_give_argmax(kw):
    torch.manual_seed(1)
    logits = torch.randn(200, 300) * 3
    out = Sampler(seed=3)(logits, [row(**kw) for _ in range(200)])
    assert out.token_ids == logits.argmax(-1).tolist()


@pytest.mark.parametrize("kw", [
    dict(temperature=1.0), dict(temperature=0.5), dict(temperature=1.7),
    dict(top_k=4), dict(top_k=7, temperature=1.3),
    dict(top_p=0.75), dict(top_p=0.5, temperature=0.8),
    dict(min_p=0.3), dict(min_p=0.1, temperature=1.5),
    dict(top_k=6, top_p=0.8, min_p=0.2, temperature=1.2),
])
def test_sampling_frequencies_match_the_filtered_softmax(kw):
    counts = sample_counts(LOGITS, 40_000, seed=7, **kw)
    assert_matches(counts, reference_probs(LOGITS, **kw))


def test_frequencies_with_penalties_and_bias_follow_the_processed_logits():
    kw = dict(repetition_penalty=1.5, frequency_penalty=0.5, presence_penalty=0.25, logit_bias={5: 2.0})
    token_ids, n = [0, 1, 1, 4, 9], 40_000
    processed = process_logits(LOGITS[None], [row(token_ids=token_ids, num_prompt_tokens=2, **kw)])[0]
    counts = sample_counts(LOGITS, n, seed=11, token_ids=token_ids, num_prompt_tokens=2, **kw)
    assert_matches(counts, reference_probs(processed))


def test_top_p_widens_past_the_first_candidates_when_the_nucleus_is_wide():
    torch.manual_seed(2)
    V = TOP_P_WIDTHS[-1] + 3000
    logits = torch.cat([torch.randn(1, V) * 0.1, torch.randn(1, V) * 2, torch.randn(1, V) * 8])  # flat .. peaked
    top_p = torch.tensor([[0.9], [0.95], [0.5]])
    ordered = logits.sort(dim=-1, descending=True).values  # the reference: a full sort
    probs = (ordered - logits.logsumexp(-1, keepdim=True)).exp()
    num_kept = (probs.cumsum(-1) - probs < top_p).sum(-1, keepdim=True)
    expected = ordered.gather(1, num_kept - 1)
    print("nucleus sizes", num_kept.flatten().tolist())
    assert num_kept[0] > TOP_P_WIDTHS[-1] and TOP_P_WIDTHS[0] < num_kept[1] and num_kept[2] < TOP_P_WIDTHS[0]
    assert torch.equal(_top_p_thresholds(logits, top_p, logits.logsumexp(-1, keepdim=True)), expected)


def test_repetition_penalty_matches_transformers():
    transformers = pytest.importorskip("transformers.generation.logits_process")
    torch.manual_seed(3)
    logits = torch.randn(3, 50) * 4
    ids = [[1, 2, 2, 7, 40], [0, 49, 3, 3, 3], [10, 11, 12, 13, 14]]
    for penalty in (1.3, 0.7):
        expected = torch.cat([transformers.RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([i]), l[None].clone())
                              for i, l in zip(ids, logits)])
        rows = [row(token_ids=i, num_prompt_tokens=2, repetition_penalty=penalty) for i in ids]
        assert_close(process_logits(logits, rows), expected, atol=0, what=f"repetition penalty {penalty}")


def test_repetition_penalty_by_hand_over_prompt_and_output():
    logits = torch.tensor([[2.0, -2.0, 0.0, 3.0, -1.0]])
    out = process_logits(logits, [row(token_ids=[0, 1, 2, 1], num_prompt_tokens=3, repetition_penalty=2.0)])
    assert out.tolist() == [[1.0, -4.0, 0.0, 3.0, -1.0]]


def test_presence_and_frequency_penalties_count_output_tokens_only():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    prompt, output = [5, 5, 4], [1, 1, 1, 2, 4]
    kw = dict(presence_penalty=0.5, frequency_penalty=0.25)
    out = process_logits(logits, [row(token_ids=prompt + output, num_prompt_tokens=len(prompt), **kw)])
    counts = torch.bincount(torch.tensor(output), minlength=6).float()
    expected = logits - counts * 0.25 - (counts > 0).float() * 0.5  # OpenAI's formula
    assert_close(out, expected, atol=1e-6, what="presence/frequency")
    assert out[0, 5] == 6.0  # only in the prompt: untouched


def test_logit_bias_then_repetition_penalty_in_that_order():
    logits = torch.tensor([[1.0, 0.0, -1.0, 0.5]])
    rows = [row(token_ids=[0, 2], num_prompt_tokens=2, logit_bias={0: 2.0, 2: -1.0, 3: 0.25}, repetition_penalty=2.0)]
    # bias first: (1 + 2) / 2 = 1.5 (penalty first would give 2.5); (-1 - 1) * 2 = -4; unseen 3 just biased
    assert process_logits(logits, rows).tolist() == [[1.5, 0.0, -4.0, 0.75]]


def test_each_row_gets_its_own_settings_in_a_mixed_batch():
    logits = LOGITS.expand(4, -1)
    rows = [row(), row(repetition_penalty=2.0, token_ids=[0]), row(presence_penalty=1.0, token_ids=[7, 1]),
            row(logit_bias={8: 5.0})]
    out = process_logits(logits, rows)
    assert torch.equal(out[0], LOGITS)
    assert out[1, 0] == 1.0 and torch.equal(out[1, 1:], LOGITS[1:])
    assert out[2, 1] == 0.5 and out[2, 7] == LOGITS[7] and torch.equal(out[2, 2:], LOGITS[2:])
    assert out[3, 8] == 4.0


def test_min_tokens_blocks_eos_and_stop_ids_until_reached():
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0, 1.0]])  # eos (0) and stop id (1) are the most likely
    kw = dict(temperature=0.0, min_tokens=3, stop_token_ids=(1,))
    blocked = process_logits(logits, [row(token_ids=[4, 4, 4], num_prompt_tokens=2, **kw)])
    assert blocked[0, :2].tolist() == [-math.inf, -math.inf] and blocked[0, 2:].tolist() == [3.0, 0.0, 1.0]
    assert Sampler()(logits, [row(token_ids=[4, 4, 4], num_prompt_tokens=2, **kw)]).token_ids == [2]
    assert Sampler()(logits, [row(token_ids=[4, 4, 4, 4], num_prompt_tokens=1, **kw)]).token_ids == [0]
    ignoring = dict(kw, ignore_eos=True)  # ignore_eos only means "do not stop": blocking is still fine
    assert Sampler()(logits, [row(token_ids=[4, 4], num_prompt_tokens=1, **ignoring)]).token_ids == [2]
    sampled = Sampler(seed=0)(logits.expand(500, -1), [row(token_ids=[4], min_tokens=3, stop_token_ids=(1,))] * 500)
    assert not {0, 1} & set(sampled.token_ids)


def test_logprobs_are_raw_log_softmax_with_ranks_and_top():
    torch.manual_seed(4)
    logits = torch.randn(4, 300) * 3
    rows = [row(logprobs=5, temperature=0.7, logit_bias={7: 50.0}), row(), row(logprobs=0, temperature=0.0),
            row(logprobs=20, top_k=3)]
    out = Sampler(seed=1)(logits.to(torch.bfloat16), rows)
    assert out.token_ids[0] == 7 and out.logprobs[1] is None
    raw = logits.to(torch.bfloat16).float().log_softmax(-1)
    for i in (0, 2, 3):
        lp, token = out.logprobs[i], out.token_ids[i]
        assert lp.token_id == token
        assert lp.logprob == pytest.approx(raw[i, token].item(), abs=1e-5)
        assert lp.rank == int((raw[i] > raw[i, token]).sum()) + 1
        top = raw[i].topk(rows[i].params.logprobs)
        assert [t for t, _ in lp.top] == top.indices.tolist()
        assert [v for _, v in lp.top] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert out.logprobs[2].rank == 1 and out.logprobs[2].top == []
    assert out.logprobs[0].rank > 1  # the bias picked a token the raw distribution does not favour


def test_prompt_logprobs():
    torch.manual_seed(5)
    prompt = [3, 17, 17, 2, 40]
    logits = torch.randn(len(prompt), 50)
    out = prompt_logprobs(logits, prompt, 3)
    raw = logits.log_softmax(-1)
    assert out[0] is None and len(out) == len(prompt)
    for t in range(1, len(prompt)):
        assert out[t].token_id == prompt[t]
        assert out[t].logprob == pytest.approx(raw[t - 1, prompt[t]].item(), abs=1e-5)
        assert out[t].rank == int((raw[t - 1] > raw[t - 1, prompt[t]]).sum()) + 1
        assert [i for i, _ in out[t].top] == raw[t - 1].topk(3).indices.tolist()
    assert prompt_logprobs(logits[:4], prompt, 0) == prompt_logprobs(logits, prompt, 0)  # the last row is unused
    assert prompt_logprobs(logits[:1], [9], 2) == [None]
    assert token_logprobs(logits[1:3], prompt[2:4], 3) == out[2:4]  # a chunk: positions 1..2 score tokens 2..3
    with pytest.raises(ValueError):
        prompt_logprobs(logits[:2], prompt, 1)


def seeded_run(steps: list[torch.Tensor], others: list[list[torch.Tensor]], position: int, n_rows: int,
               seed: int) -> list[int]:
    """The tokens of a seeded row placed at `position` among `n_rows`, over several steps."""
    sampler = Sampler(seed=1000 + n_rows)  # a different shared generator in each batch layout
    generator = torch.Generator().manual_seed(seed)
    other_generators = [torch.Generator().manual_seed(99 + j) if j % 2 else None for j in range(n_rows)]
    kw = dict(temperature=0.9, top_k=200, top_p=0.95, presence_penalty=0.4, repetition_penalty=1.1)
    ids, out = [1, 2, 3], []
    for step, logits in enumerate(steps):
        rows, batch = [], []
        for j in range(n_rows):
            if j == position:
                rows.append(row(token_ids=ids + out, num_prompt_tokens=3, generator=generator, seed=seed, **kw))
                batch.append(logits)
            else:
                rows.append(row(token_ids=[j, step], generator=other_generators[j], temperature=0.5 * (j % 3),
                                top_p=0.8))
                batch.append(others[step][j])
        out.append(sampler(torch.stack(batch), rows).token_ids[position])
    return out


def test_seeded_rows_are_reproducible_whatever_the_batch():
    torch.manual_seed(6)
    V, num_steps = 2048, 20
    steps = [torch.randn(V) * 2 for _ in range(num_steps)]
    others = [[torch.randn(V) * 2 for _ in range(5)] for _ in range(num_steps)]
    alone = seeded_run(steps, others, 0, 1, seed=42)
    assert seeded_run(steps, others, 0, 5, seed=42) == alone  # first of five
    assert seeded_run(steps, others, 2, 3, seed=42) == alone  # last of three
    assert seeded_run(steps, others, 0, 1, seed=43) != alone  # the seed matters
    assert len(set(alone)) > 5


def test_unseeded_rows_follow_the_sampler_seed():
    logits = torch.randn(8, 500)
    rows = [row() for _ in range(8)]
    assert Sampler(seed=5)(logits, rows).token_ids == Sampler(seed=5)(logits, rows).token_ids
    assert Sampler(seed=5)(logits, rows).token_ids != Sampler(seed=6)(logits, rows).token_ids


def test_filtered_tokens_are_never_drawn_even_at_extreme_logits():
    logits = torch.full((3, 100), -1e30)
    logits[:, 50] = 0.0
    logits[1, 51] = -90.0  # exp underflows to a denormal: dropped, never drawn
    logits[2, :] = -math.inf
    logits[2, 99] = 3.0
    out = Sampler(seed=0)(logits, [row(temperature=2.0), row(temperature=0.3), row(top_p=0.5, top_k=3)])
    assert out.token_ids == [50, 50, 99]


@pytest.mark.parametrize("V", [4096, 1000, 997])  # 256-token blocks, 8-token blocks, no blocks (odd width)
def test_draw_inverts_the_cdf_and_never_lands_on_dropped_tokens(V):
    logits = torch.full((6, V), -math.inf)
    logits[0, 0] = logits[1, V - 1] = 0.0  # one allowed token, first or last
    logits[2, [3, V // 2, V - 2]] = torch.tensor([0.0, -200.0, -3.0])  # -200: underflows, still allowed
    logits[3:] = torch.randn(3, V)
    floor = torch.tensor([[-87.0], [-87.0], [-300.0], [-87.0], [0.5], [logits[5].max()]])  # row 5: the best alone
    extremes = (0.0, 2.0 ** -24, 0.5, 1.0 - 2.0 ** -24)
    for u in extremes:
        picked = _draw(logits.clone(), floor, torch.full((6,), u)).tolist()
        assert picked[:2] == [0, V - 1] and picked[2] in (3, V - 2) and logits[4, picked[4]] >= 0.5
        assert picked[5] == logits[5].argmax()
    # inside a row: the CDF at u in order of token id, as a cumulative sum over all tokens gives it
    probs = torch.softmax(logits[3].double(), -1)
    cdf = probs.cumsum(-1)
    for u in torch.linspace(0.001, 0.999, 50).tolist():
        expected = int(torch.searchsorted(cdf, torch.tensor([u], dtype=torch.float64), right=True))
        got = _draw(logits[3:4].clone(), floor[3:4], torch.tensor([u])).item()
        assert got == expected or abs(cdf[expected] - u) < 1e-5  # only float rounding at a boundary may differ


def test_out_of_range_token_ids_are_rejected():
    with pytest.raises(ValueError, match="logit_bias"):
        check_token_ids(SamplingParams(logit_bias={100: 1.0}), 100)
    with pytest.raises(ValueError, match="stop_token_ids"):
        check_token_ids(SamplingParams(stop_token_ids=(-1,)), 100)
    check_token_ids(SamplingParams(logit_bias={99: 1.0}, stop_token_ids=(0,)), 100)
    with pytest.raises(ValueError, match="logit_bias"):
        Sampler()(torch.zeros(1, 10), [row(logit_bias={10: 1.0})])
    with pytest.raises(ValueError, match="penalized"):
        Sampler()(torch.zeros(2, 10), [row(repetition_penalty=1.2, token_ids=[3, 10]), row()])
