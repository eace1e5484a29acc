"""Experiment: a pair classifier (a cross-encoder fine-tuned from the packaged MiniLM) as a second check of the
semantic cache, scored out of fold (5 folds) on the development pairs (dev + first held-out), next to the
similarity threshold and the key-term guard. Not part of the gateway; docs/benchmarks.md has the result.

    python benchmarks/semantic_pair_classifier_experiment.py [EPOCHS]     # ~27 min for 5 folds on two cores
"""

import json
import random
import sys
import time

import numpy as np
import torch

from temper.embeddings import Embedder
from temper.gateway.semantic import embed_key, guard_mismatches, key_terms, normalize_text

torch.manual_seed(0)
random.seed(0)
from pathlib import Path

D = str(Path(__file__).parents[1] / "temper" / "gateway" / "data") + "/"
rows = [json.loads(l) for f in ("semantic_pairs.jsonl", "semantic_pairs_heldout.jsonl") for l in open(D + f)]
emb = Embedder.load()
tk = emb.tokenizer
CLS, SEP = 101, 102
A = embed_key(emb, [r["a"] for r in rows])
B = embed_key(emb, [r["b"] for r in rows])
sim = (A * B).sum(1).numpy()
guard = np.array([not guard_mismatches(key_terms(r["a"]), key_terms(r["b"])) for r in rows])
y = np.array([r["equivalent"] for r in rows])


def ids(a, b):
    x = tk.encode(normalize_text(a).lower()).ids[1:-1][:60]
    z = tk.encode(normalize_text(b).lower()).ids[1:-1][:60]
    return [CLS] + x + [SEP] + z + [SEP]


def batch(seqs):
    L = max(map(len, seqs))
    t = torch.zeros(len(seqs), L, dtype=torch.long)
    v = torch.zeros(len(seqs), L, dtype=torch.bool)
    for i, s in enumerate(seqs):
        t[i, : len(s)] = torch.tensor(s)
        v[i, : len(s)] = True
    return t, v


class CE(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.bert = Embedder.load().model.requires_grad_(True)
        s.head = torch.nn.Linear(384, 1)

    def forward(s, t, v):
        h = s.bert(t, v)
        m = v.unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1)
        return s.head(pooled).squeeze(-1)


EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 4


def train(idx):
    model = CE()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    data = [(rows[i]["a"], rows[i]["b"], float(y[i])) for i in idx] + [
        (rows[i]["b"], rows[i]["a"], float(y[i])) for i in idx
    ]
    steps = EPOCHS * len(data) // 32
    st = 0
    model.train()
    for ep in range(EPOCHS):
        random.shuffle(data)
        for k in range(0, len(data), 32):
            b = data[k : k + 32]
            t, v = batch([ids(a, c) for a, c, _ in b])
            lab = torch.tensor([l for *_, l in b])
            for g in opt.param_groups:
                g["lr"] = 3e-5 * min(1, (st + 1) / 20) * max(0.05, 1 - st / steps)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(t, v), lab)
            loss.backward()
            opt.step()
            opt.zero_grad()
            st += 1
    model.eval()
    return model


def predict(model, idx):
    out = []
    with torch.no_grad():
        for k in range(0, len(idx), 64):
            ii = idx[k : k + 64]
            s1 = model(*batch([ids(rows[i]["a"], rows[i]["b"]) for i in ii]))
            s2 = model(*batch([ids(rows[i]["b"], rows[i]["a"]) for i in ii]))
            out += torch.sigmoid((s1 + s2) / 2).tolist()
    return out


n = len(rows)
perm = np.random.RandomState(0).permutation(n)
folds = np.array_split(perm, 5)
oof = np.zeros(n)
t0 = time.time()
for f in range(5):
    tr = np.concatenate([folds[g] for g in range(5) if g != f])
    m = train(list(tr))
    oof[folds[f]] = predict(m, list(folds[f]))
    print("fold", f, round(time.time() - t0), flush=True)
np.savez("/tmp/pair_oof.npz", oof=oof, sim=sim, guard=guard, y=y)
for t1 in (0.6, 0.7, 0.75, 0.8):
    for t2 in (0.5, 0.7, 0.8, 0.9, 0.95, 0.98):
        for g in (0, 1):
            m = (sim >= t1) & (oof >= t2) & (guard if g else True)
            print(f"sim>={t1} p>={t2} guard={g}: hits {m[y].mean():.3f} fh {m[~y].mean():.4f}")
