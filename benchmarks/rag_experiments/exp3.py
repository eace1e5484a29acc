import pickle

import numpy as np

from temper.rag.evaluate import trigrams

d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
bm = pickle.load(open("/tmp/rx/bm.pkl", "rb"))
J = pickle.load(open("/tmp/rx/J.pkl", "rb"))
chunks, V, qa, Q, rel = d["chunks"], d["V"], d["qa"], d["Q"], d["rel"]
nq, nc = rel.shape
qid = {q.id: i for i, q in enumerate(qa)}
pages = np.array([c.metadata.get("path") for c in chunks])
ctri = [None] * nc
prel = rel.copy()
for j in J:
    if not j["relevant"]:
        continue
    i = qid[j["qid"]]
    ev = trigrams(j["phrase"])
    for c in np.where(pages == j["page"])[0]:
        if ctri[c] is None:
            ctri[c] = trigrams(chunks[c].embed_text)
        if len(ev & ctri[c]) >= 0.5 * len(ev):
            prel[i, c] = True
pickle.dump(prel, open("/tmp/rx/prel.pkl", "wb"))
D = Q @ V.T


def rec(o, R, k=5):
    return np.mean([R[i, o[i][:k]].any() for i in range(nq)])


dord = np.argsort(-D, 1)[:, :50]


def rrf(a, b, k=60):
    out = []
    for i in range(nq):
        f = {}
        for o in (a, b):
            for r, j in enumerate(o[i][:50], 1):
                f[j] = f.get(j, 0) + 1 / (k + r)
        out.append(sorted(f, key=lambda j: -f[j]))
    return out


for name, key in (("old", (False, 1.5, 0.75)), ("stem", (True, 1.5, 0.75))):
    bo = np.argsort(-bm[key], 1)[:, :50]
    h = rrf(dord, bo)
    for lab, R in (("strict", rel), ("pooled", prel)):
        print(
            f"{name} {lab}: dense r5 {rec(dord, R):.3f} bm25 r5 {rec(bo, R):.3f} hybrid r1 {rec(h, R, 1):.3f} r3 {rec(h, R, 3):.3f} r5 {rec(h, R):.3f} r10 {rec(h, R, 10):.3f}"
        )
