import pickle

import numpy as np

d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
bm = pickle.load(open("/tmp/rx/bm.pkl", "rb"))
chunks, V, qa, Q, rel = d["chunks"], d["V"], d["qa"], d["Q"], d["rel"]
nq, nc = rel.shape
D = Q @ V.T
S = bm[(True, 1.2, 0.75)]
dord = np.argsort(-D, 1)
bord = np.argsort(-S, 1)
pages = np.array([c.metadata.get("path") or c.source for c in chunks])


def rec(o, k=5):
    return np.mean([rel[i, o[i][:k]].any() for i in range(nq)])


def fuse(wd=1, wb=1, k=60, n=50, page=0.0, pk=3):
    out = []
    for i in range(nq):
        f = {}
        for w, o in ((wd, dord[i, :n]), (wb, bord[i, :n])):
            for r, j in enumerate(o, 1):
                f[j] = f.get(j, 0) + w / (k + r)
        if page:
            ps = {}
            for j, s in sorted(f.items(), key=lambda kv: -kv[1]):
                ps.setdefault(pages[j], []).append(s)
            pg = {p: sum(v[:pk]) for p, v in ps.items()}
            f = {j: s + page * pg[pages[j]] for j, s in f.items()}
        out.append(sorted(f, key=lambda j: -f[j]))
    return out


for args in [
    dict(),
    dict(k=20),
    dict(k=100),
    dict(wd=0.7),
    dict(wd=1.3),
    dict(n=100),
    dict(page=0.3),
    dict(page=0.6),
    dict(page=1.0),
    dict(page=0.5, pk=1),
    dict(page=0.5, pk=5),
]:
    o = fuse(**args)
    print(args, "r5 %.3f r10 %.3f r50 %.3f" % (rec(o), rec(o, 10), rec(o, 50)))
