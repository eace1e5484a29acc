import pickle

import numpy as np

d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
bm = pickle.load(open("/tmp/rx/bm.pkl", "rb"))
prel = pickle.load(open("/tmp/rx/prel.pkl", "rb"))
chunks, V, qa, Q, rel = d["chunks"], d["V"], d["qa"], d["Q"], d["rel"]
nq, nc = rel.shape
D = Q @ V.T
S = bm[(True, 1.5, 0.75)]


def rec(o, R, k=5):
    return np.mean([R[i, list(o[i])[:k]].any() for i in range(nq)])


for w in (0.3, 0.5, 0.7):
    for norm in ("minmax", "z", "max"):
        out = []
        for i in range(nq):
            c = np.union1d(np.argsort(-D[i])[:50], np.argsort(-S[i])[:50])
            d_, s_ = D[i, c], S[i, c]
            if norm == "minmax":
                d_ = (d_ - d_.min()) / (np.ptp(d_) + 1e-9)
                s_ = (s_ - s_.min()) / (np.ptp(s_) + 1e-9)
            elif norm == "z":
                d_ = (d_ - d_.mean()) / (d_.std() + 1e-9)
                s_ = (s_ - s_.mean()) / (s_.std() + 1e-9)
            else:
                s_ = s_ / (s_.max() + 1e-9)
            sc = w * d_ + (1 - w) * s_
            out.append(c[np.argsort(-sc)])
        print(w, norm, "strict %.3f judged %.3f r10j %.3f" % (rec(out, rel), rec(out, prel), rec(out, prel, 10)))
print("---")


def fuse(i, w, norm="minmax"):
    c = np.union1d(np.argsort(-D[i])[:50], np.argsort(-S[i])[:50])
    d_, s_ = D[i, c], S[i, c]
    if norm == "minmax":
        d_ = (d_ - d_.min()) / (np.ptp(d_) + 1e-9)
        s_ = (s_ - s_.min()) / (np.ptp(s_) + 1e-9)
    else:
        d_ = (d_ - d_.mean()) / (d_.std() + 1e-9)
        s_ = (s_ - s_.mean()) / (s_.std() + 1e-9)
    return c[np.argsort(-(w * d_ + (1 - w) * s_))]


for norm in ("minmax", "z"):
    for w in (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9):
        out = [fuse(i, w, norm) for i in range(nq)]
        print(
            norm,
            w,
            "strict r5 %.3f judged r5 %.3f r1 %.3f r10 %.3f"
            % (rec(out, rel), rec(out, prel), rec(out, prel, 1), rec(out, prel, 10)),
        )
# 2-fold CV over questions by id hash, choose w on one half by judged r5
import hashlib

half = np.array([int(hashlib.md5(q.id.encode()).hexdigest(), 16) % 2 for q in qa])
ws = np.arange(0.3, 0.96, 0.05)
tot_s = tot_j = 0
for f in (0, 1):
    tr = half != f
    te = half == f
    best = max(ws, key=lambda w: np.mean([prel[i, fuse(i, w)[:5]].any() for i in np.where(tr)[0]]))
    js = np.mean([prel[i, fuse(i, best)[:5]].any() for i in np.where(te)[0]])
    ss = np.mean([rel[i, fuse(i, best)[:5]].any() for i in np.where(te)[0]])
    print("fold", f, "chosen w", round(best, 2), "test judged %.3f strict %.3f" % (js, ss))
    tot_j += js * te.sum()
    tot_s += ss * te.sum()
print("CV judged %.3f strict %.3f" % (tot_j / nq, tot_s / nq))
