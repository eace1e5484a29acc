import pickle

import numpy as np

d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
bm = pickle.load(open("/tmp/rx/bm.pkl", "rb"))
prel = pickle.load(open("/tmp/rx/prel.pkl", "rb"))
w = pickle.load(open("/tmp/rx/win.pkl", "rb"))
chunks, V, qa, Q, rel = d["chunks"], d["V"], d["qa"], d["Q"], d["rel"]
nq, nc = rel.shape
owner, E = w["owner"], w["E"]
WS = Q @ E.T  # nq x nwin


def rec(o, R, k=5):
    return np.mean([R[i, list(o[i])[:k]].any() for i in range(nq)])


D = Q @ V.T
dord = np.argsort(-D, 1)[:, :50]
for key in [(False, 1.5, 0.75), (True, 1.5, 0.75)]:
    bo = np.argsort(-bm[key], 1)[:, :50]

    def rrf(lists, k=60):
        out = []
        for i in range(nq):
            f = {}
            for o in lists:
                for r, j in enumerate(o[i][:50], 1):
                    f[j] = f.get(j, 0) + 1 / (k + r)
            out.append(sorted(f, key=lambda j: -f[j]))
        return out

    h = rrf([dord, bo])
    # max window score per candidate
    res = {}
    wmax = np.full((nq, nc), -1.0, np.float32)
    for i in range(nq):
        np.maximum.at(wmax[i], owner, WS[i])
    cands = [hh[:50] for hh in h]
    worder = [sorted(c, key=lambda j: -wmax[i, j]) for i, c in enumerate(cands)]
    print(key, "hybrid strict %.3f pooled %.3f" % (rec(h, rel), rec(h, prel)))
    print(
        " rerank by max-window: strict %.3f pooled %.3f r10p %.3f"
        % (rec(worder, rel), rec(worder, prel), rec(worder, prel, 10))
    )
    # window list as a third RRF list over all windows (global window search)
    wl = []
    for i in range(nq):
        o = np.argsort(-wmax[i])[:50]
        wl.append(o)
    for lists, name in (([dord, bo, wl], "rrf d+b+w"), ([bo, wl], "rrf b+w"), ([dord, bo, wl, wl], "rrf d+b+2w")):
        hh = rrf(lists)
        print(" ", name, "strict %.3f pooled %.3f r10p %.3f" % (rec(hh, rel), rec(hh, prel), rec(hh, prel, 10)))
    for a in (0.3, 0.5, 0.7):
        comb = [sorted(c, key=lambda j: -(a * wmax[i, j] + (1 - a) * D[i, j])) for i, c in enumerate(cands)]
        print(" lin", a, "strict %.3f pooled %.3f" % (rec(comb, rel), rec(comb, prel)))
