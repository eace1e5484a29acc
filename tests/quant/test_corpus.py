"""The Python-docs corpus: a stable disjoint split, seeded calibration windows, and a sane perplexity."""
from __future__ import annotations

import math

import pytest

from temper.models.loader import load
from temper.models.registry import resolve
from temper.quant import corpus
from temper.quant.corpus import CorpusMissingError

needs_corpus = pytest.mark.skipif(not corpus.corpus_available(),
                                  reason="the Python docs corpus is not installed (apt-get install python3.11-doc)")


@pytest.fixture(scope="module")
def smollm2():
    return load(resolve("smollm2-135m-instruct"))


@pytest.fixture
def small_corpus(tmp_path):
    """A corpus of 25 short files in two folders, laid out as the docs are."""
    for i in range(25):
        path = tmp_path / ("library" if i % 2 else "howto") / f"page{i:02d}.rst.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"Page {i}\n=======\n\n" + f"The function ``f{i}`` returns {i} plus one. " * 40)
    return tmp_path


def test_missing_corpus_names_the_package(tmp_path):
    assert not corpus.corpus_available(tmp_path)
    with pytest.raises(CorpusMissingError, match="apt-get install python3.11-doc"):
        corpus.corpus_files(tmp_path)


def test_split_every_tenth_file_by_sorted_path(small_corpus):
    calibration, heldout = corpus.corpus_files(small_corpus)
    names = sorted(p.relative_to(small_corpus).as_posix() for p in small_corpus.rglob("*.rst.txt"))
    assert [p.relative_to(small_corpus).as_posix() for p in heldout] == names[::10]
    assert set(calibration) | set(heldout) == set(small_corpus.rglob("*.rst.txt"))


@needs_corpus
def test_docs_split_is_disjoint_and_stable():
    calibration, heldout = corpus.corpus_files()
    assert not set(calibration) & set(heldout)
    assert len(heldout) == math.ceil((len(calibration) + len(heldout)) / corpus.HELDOUT_EVERY)
    assert (calibration, heldout) == corpus.corpus_files()


def test_samples_are_seeded_windows_of_the_calibration_text(smollm2, small_corpus):
    tok = smollm2.tokenizer
    a = corpus.calibration_samples(tok, num_samples=6, seq_len=32, seed=0, root=small_corpus)
    assert a == corpus.calibration_samples(tok, num_samples=6, seq_len=32, seed=0, root=small_corpus)
    assert a != corpus.calibration_samples(tok, num_samples=6, seq_len=32, seed=1, root=small_corpus)
    assert len(a) == 6 and all(len(s) == 32 for s in a)
    _, heldout = corpus.corpus_files(small_corpus)
    heldout_names = {f"``f{int(p.stem[4:6])}``" for p in heldout}  # page07.rst.txt -> ``f7``
    assert not any(name in tok.decode(s) for s in a for name in heldout_names)


def test_heldout_ids_are_the_first_tokens_of_the_heldout_files(smollm2, small_corpus):
    tok = smollm2.tokenizer
    ids = corpus.heldout_ids(tok, 100, root=small_corpus)
    assert len(ids) == 100 and ids == corpus.heldout_ids(tok, 100, root=small_corpus)
    assert tok.decode(ids).startswith("Page 0\n")
    with pytest.raises(ValueError, match="fewer than"):
        corpus.heldout_ids(tok, 10**6, root=small_corpus)


@needs_corpus
def test_smollm2_perplexity_on_heldout_docs_is_sane(smollm2):
    ids = corpus.heldout_ids(smollm2.tokenizer, 2048)
    ppl = corpus.perplexity(smollm2.model, ids)
    print(f"SmolLM2-135M perplexity on 2048 held-out tokens: {ppl:.2f}")
    assert 5 < ppl < 60
