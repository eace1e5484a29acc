"""The Python documentation as a text corpus: calibration windows for GPTQ and a held-out slice for perplexity.

The corpus is the reST sources of the Python 3.11 docs that Debian's `python3.11-doc` package installs
(`/usr/share/doc/python3.11/html/_sources/**/*.rst.txt`, 497 files, about 1.4M words): English prose with
code, like what the small models serve, and on disk without a network.

The split is by file, on the sorted relative paths: every 10th file (indices 0, 10, 20, ...) is held out, the
other nine in ten calibrate. It depends only on the file names, so it is the same on every machine with the
package, and no text is in both parts.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from temper.errors import TemperError
from temper.tokenizer import Tokenizer

CORPUS_NAME = "python3.11-doc"  # what `QuantConfig.calibration["corpus"]` records
DOCS_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
HELDOUT_EVERY = 10  # file i (in sorted order) is held out when i % HELDOUT_EVERY == 0


class CorpusMissingError(TemperError):
    """The Python documentation sources (Debian package python3.11-doc) are not installed."""


def corpus_available(root: Path = DOCS_ROOT) -> bool:
    return any(root.rglob("*.rst.txt"))


def corpus_files(root: Path = DOCS_ROOT) -> tuple[list[Path], list[Path]]:
    """(calibration files, held-out files), each in sorted order of their paths relative to `root`."""
    files = sorted(root.rglob("*.rst.txt"), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise CorpusMissingError(f"no Python documentation sources under {root}: install them with "
                                 f"`apt-get install {CORPUS_NAME}`")
    calibration = [f for i, f in enumerate(files) if i % HELDOUT_EVERY]
    heldout = [f for i, f in enumerate(files) if i % HELDOUT_EVERY == 0]
    return calibration, heldout


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") + "\n\n"


def calibration_samples(tokenizer: Tokenizer, num_samples: int = 64, seq_len: int = 512, seed: int = 0,
                        root: Path = DOCS_ROOT) -> list[list[int]]:
    """`num_samples` windows of `seq_len` tokens at random offsets (seeded) of the calibration files' tokens,
    the files concatenated in sorted order."""
    files, _ = corpus_files(root)
    ids = [i for enc in tokenizer.encode_batch([_read(f) for f in files], add_special_tokens=False) for i in enc]
    if len(ids) < seq_len:
        raise ValueError(f"the calibration text has {len(ids)} tokens, fewer than seq_len {seq_len}")
    rng = random.Random(seed)
    starts = [rng.randrange(len(ids) - seq_len + 1) for _ in range(num_samples)]
    return [ids[s: s + seq_len] for s in starts]


def heldout_ids(tokenizer: Tokenizer, num_tokens: int = 16384, root: Path = DOCS_ROOT) -> list[int]:
    """The first `num_tokens` tokens of the held-out files, concatenated in sorted order."""
    _, files = corpus_files(root)
    ids: list[int] = []
    for f in files:
        ids.extend(tokenizer.encode(_read(f), add_special_tokens=False))
        if len(ids) >= num_tokens:
            return ids[:num_tokens]
    raise ValueError(f"the held-out text has {len(ids)} tokens, fewer than the {num_tokens} asked")


@torch.inference_mode()
def perplexity(model: nn.Module, ids: list[int], seq_len: int = 512, batch_size: int = 4,
               progress: bool = False) -> float:
    """exp of the mean next-token NLL over non-overlapping windows of `seq_len` tokens (the last one may be
    shorter); every token of a window but its first is predicted, from the window alone.

    Memory: one batch of logits (batch_size x seq_len x vocab in the model's dtype), and one row's fp32
    log-softmax at a time.
    """
    windows = [ids[i: i + seq_len] for i in range(0, len(ids), seq_len)]
    windows = [w for w in windows if len(w) > 1]
    if not windows:
        raise ValueError(f"perplexity needs at least 2 tokens, got {len(ids)}")
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    batches = range(0, len(windows), batch_size)
    for start in tqdm(batches, desc="perplexity", unit="batch", disable=not progress):
        chunk = windows[start: start + batch_size]
        groups = [chunk] if len({len(w) for w in chunk}) == 1 else [chunk[:-1], chunk[-1:]]  # the short tail alone
        for group in groups:
            x = torch.tensor(group, device=device)  # (B, T)
            logits = model(x)  # (B, T, V)
            for row, target in zip(logits, x):
                nll += F.cross_entropy(row[:-1].float(), target[1:], reduction="sum").item()
                count += len(target) - 1
    return math.exp(nll / count)
