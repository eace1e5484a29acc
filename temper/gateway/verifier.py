"""The semantic cache's pair verifier: a cross-encoder that reads a new question and a cached one together and says
whether the cached answer serves the new question.

Embedding similarity is mostly topic: "time in Tokyo when it is 9 am in Paris" and the same with the cities swapped
are 0.98 apart, and no threshold separates them from real paraphrases. The key-term guard (semantic.py) catches the
differences its rules know; this model reads both questions token by token. It is the packaged all-MiniLM-L6-v2
(the same weights as the cache's embedder) fine-tuned as a classifier over "[CLS] a [SEP] b [SEP]", trained on the
project's written question pairs (temper/gateway/data/: 1,863 pairs, 699 paraphrases and 1,164 non-equivalent
questions, most of them hard: another entity, number, unit, direction, negation, attribute...) plus questions with
two nouns swapped (`swap_negatives`). Its score is the mean of both orders, so it is symmetric.

It trains once, on first use (about 8 minutes on 2 CPU cores; `temper gateway train-verifier` does it ahead of
time), and is cached under the temper cache directory keyed by its training data and settings. Scoring one
candidate pair costs a MiniLM forward of ~40 tokens, both orders in one batch: 14-20 ms on a 2-core CPU, paid
only on a semantic lookup that found a candidate.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from temper.embeddings import Embedder
from temper.gateway.semantic import _NON_CONTENT, _WORD, normalize_text
from temper.models.loader import cache_dir

log = logging.getLogger("temper.gateway")

FORMAT = 2
DATA = Path(__file__).parent / "data"
TRAIN_FILES = ("semantic_pairs.jsonl", "semantic_pairs_heldout.jsonl", "semantic_pairs_fresh.jsonl",
               "semantic_pairs_fresh2.jsonl")
MAX_SIDE_TOKENS = 60
SETTINGS = {"epochs": 4, "batch": 32, "lr": 3e-5, "warmup": 20, "weight_decay": 0.01, "seed": 0,
            "max_side_tokens": MAX_SIDE_TOKENS, "swap_rate": 0.35}
# Two content words of a question swapped ("the effect of stress on sleep" -> "... of sleep on stress") is another
# question, though every word is the same: the trap PAWS (Zhang et al., 2019) built for paraphrase models, which
# fail it without such examples. Format 1 (trained without them) took 5 of 20 such swaps for paraphrases on unseen
# pairs, so training adds swapped copies of its questions as negatives, except where the two words are joined
# symmetrically ("X and Y", "between X and Y").
_SYMMETRIC = re.compile(r"\b(between|and|or|vs|versus|both|either|neither|nor|compare|compared|comparing|"
                        r"difference|differences|same|similar|equal)\b", re.IGNORECASE)


class VerifierMissing(FileNotFoundError):
    pass


def training_pairs(files: Sequence[str] = TRAIN_FILES) -> list[dict]:
    rows = []
    for name in files:
        with open(DATA / name, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


_NOUN_CUES = frozenset({"the", "a", "an", "of", "on", "from", "into", "with", "for", "my", "your", "every", "each",
                        "some", "any", "no", "this", "that", "in", "at", "by", "about", "than", "per"})


def swapped(text: str, rng: random.Random) -> str | None:
    """The question with two of its nouns exchanged, or None where no safe swap exists. A noun here is a content
    word right after an article or a preposition ("the effect of stress on sleep"), or a capitalized word after the
    first ("Moon", "Earth"); both swapped words are of the same kind, so the result often reads as a real
    question (and where it does not, it is still not the same question)."""
    if _SYMMETRIC.search(text):
        return None
    words = []  # (start, end, word), a possessive's "'s" left out ("Moon's" -> "Moon")
    for m in _WORD.finditer(text):
        w = m.group()
        if len(w) > 2 and w[-2] in "'’" and w[-1] in "sS":
            w = w[:-2]
        words.append((m.start(), m.start() + len(w), w))
    content = [w.lower() not in _NON_CONTENT and len(w) > 2 and w.isalpha() for _, _, w in words]
    kinds: dict[str, list[tuple[int, int, str]]] = {"cued": [], "name": []}
    for i, span in enumerate(words):
        if not content[i]:
            continue
        if i + 1 < len(words) and content[i + 1] and not span[2][0].isupper():
            continue  # a modifier ("binary" in "binary search"): swap the head of the phrase
        start = i
        while start > 0 and content[start - 1]:
            start -= 1
        if i > 0 and span[2][0].isupper():
            kinds["name"].append(span)
        elif start > 0 and words[start - 1][2].lower() in _NOUN_CUES:
            kinds["cued"].append(span)
    choices = [(a, b) for spans in kinds.values() for i, a in enumerate(spans) for b in spans[i + 1:]
               if a[2].lower() != b[2].lower() and b[0] > a[1] + 1]
    if not choices:
        return None
    a, b = rng.choice(choices)
    return text[:a[0]] + b[2] + text[a[1]:b[0]] + a[2] + text[b[1]:]


def swap_negatives(rows: Sequence[dict], rate: float, seed: int) -> list[dict]:
    """PAWS-style negatives: for a share `rate` of the rows, their first question against itself with two words
    swapped."""
    rng = random.Random(seed)
    out = []
    for r in rows:
        if rng.random() >= rate:
            continue
        b = swapped(r["a"], rng)
        if b is not None and normalize_text(b).lower() != normalize_text(r["a"]).lower():
            out.append({"a": r["a"], "b": b, "equivalent": False, "kind": "swap", "split": "synthetic"})
    return out


def default_path() -> Path:
    """Where the verifier trained on the packaged pairs with SETTINGS lives (the key changes when either does)."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, **SETTINGS}, sort_keys=True).encode())
    for name in TRAIN_FILES:
        h.update((DATA / name).read_bytes())
    return cache_dir() / "gateway" / f"pair-verifier-v{FORMAT}-{h.hexdigest()[:12]}"


class PairVerifier(nn.Module):
    def __init__(self, embedder: Embedder):
        super().__init__()
        self.bert = embedder.model
        self.tokenizer = embedder.tokenizer
        self.lower = embedder.config.do_lower_case
        self.head = nn.Linear(embedder.dim, 1)
        self.cls = embedder.tokenizer.token_to_id("[CLS]")
        self.sep = embedder.tokenizer.token_to_id("[SEP]")
        self._lock = threading.Lock()  # the gateway scores from worker threads

    def _side(self, text: str) -> list[int]:
        text = normalize_text(text)
        return self.tokenizer.encode(text.lower() if self.lower else text).ids[1:-1][:MAX_SIDE_TOKENS]

    def _batch(self, pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [[self.cls, *self._side(a), self.sep, *self._side(b), self.sep] for a, b in pairs]
        width = max(map(len, seqs))
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        valid = torch.zeros(len(seqs), width, dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            valid[i, :len(s)] = True
        return ids, valid

    def forward(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.bert(ids, valid)
        m = valid.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1)).squeeze(-1)

    def logits(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        return self(*self._batch(pairs))

    @torch.inference_mode()
    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
        """P(the answer to b serves a) for each (a, b): the mean logit of both orders through a sigmoid."""
        out: list[float] = []
        with self._lock:
            for k in range(0, len(pairs), batch_size):
                chunk = list(pairs[k:k + batch_size])
                both = self.logits(chunk + [(b, a) for a, b in chunk])
                out += torch.sigmoid((both[:len(chunk)] + both[len(chunk):]) / 2).tolist()
        return out

    # ------------------------------------------------------------------ files
    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "settings": SETTINGS, "files": TRAIN_FILES}))
        if folder.exists():
            _replace_dir(tmp, folder)
        else:
            os.replace(tmp, folder)

    @classmethod
    def load(cls, folder: str | os.PathLike | None = None) -> PairVerifier:
        from safetensors.torch import load_file

        folder = default_path() if folder is None else Path(folder).expanduser()
        if not (folder / "model.safetensors").is_file():
            raise VerifierMissing(f"no trained pair verifier in {folder}")
        model = cls(Embedder.load())
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model.eval().requires_grad_(False)

    @classmethod
    def load_or_train(cls, folder: str | os.PathLike | None = None) -> PairVerifier:
        """Load the verifier, training it first (once; other processes wait for the one that trains)."""
        target = default_path() if folder is None else Path(folder).expanduser()
        try:
            return cls.load(target)
        except VerifierMissing:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(target.with_name(target.name + ".lock")):
            try:
                return cls.load(target)  # trained by another process while we waited
            except VerifierMissing:
                log.warning("the semantic cache's pair verifier is not trained yet: training it now, once (about 8 "
                            "minutes on 2 CPU cores; `temper gateway train-verifier` does it ahead of time)")
                train(training_pairs(), target)
        return cls.load(target)


def train(rows: Sequence[dict], out: Path | None, epochs: int = SETTINGS["epochs"], progress: bool = True,
          seed: int = SETTINGS["seed"]) -> PairVerifier:
    """Fine-tune MiniLM + a linear head on (a, b, equivalent) rows, both orders of each pair; save to `out`."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = PairVerifier(Embedder.load())
    model.bert.requires_grad_(True)
    model.train()
    rows = list(rows) + swap_negatives(rows, SETTINGS["swap_rate"], seed)
    data = [(r["a"], r["b"], float(r["equivalent"])) for r in rows] + \
           [(r["b"], r["a"], float(r["equivalent"])) for r in rows]
    bs, lr = SETTINGS["batch"], SETTINGS["lr"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=SETTINGS["weight_decay"])
    steps = max(1, epochs * -(-len(data) // bs))
    step, start = 0, time.monotonic()
    bar = tqdm(total=steps, desc="pair verifier", unit="step", disable=not progress)
    for _ in range(epochs):
        rng.shuffle(data)
        for k in range(0, len(data), bs):
            chunk = data[k:k + bs]
            for g in opt.param_groups:  # linear warm-up, then linear decay to 5%
                g["lr"] = lr * min(1.0, (step + 1) / SETTINGS["warmup"]) * max(0.05, 1 - step / steps)
            loss = nn.functional.binary_cross_entropy_with_logits(
                model.logits([(a, b) for a, b, _ in chunk]), torch.tensor([y for *_, y in chunk]))
            loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval().requires_grad_(False)
    log.info("pair verifier: trained on %d pairs, %d steps in %.0f s", len(rows), steps, time.monotonic() - start)
    if out is not None:
        model.save(out)
        log.info("pair verifier saved to %s", out)
    return model


def _replace_dir(tmp: Path, folder: Path) -> None:
    import shutil

    old = folder.with_name(folder.name + f".old-{os.getpid()}")
    os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
