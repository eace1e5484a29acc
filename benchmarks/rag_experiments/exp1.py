import logging
import pickle

import bm25s
import numpy as np
import Stemmer

logging.getLogger("bm25s").setLevel(logging.WARNING)
d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
chunks, V, qa, Q, rel = d["chunks"], d["V"], d["qa"], d["Q"], d["rel"]
texts = [c.embed_text for c in chunks]
nq, nc = rel.shape


def rec(order, k=5):
    return np.mean([rel[i, order[i][:k]].any() for i in range(nq)])


dense = Q @ V.T
dorder = np.argsort(-dense, 1)[:, :100]
print("dense r5 %.3f r10 %.3f r50 %.3f" % (rec(dorder), rec(dorder, 10), rec(dorder, 50)))


def bm(stem, method="lucene", k1=1.5, b=0.75, txts=texts):
    st = Stemmer.Stemmer("english") if stem else None
    tok = bm25s.tokenize(txts, stopwords="en", stemmer=st, show_progress=False)
    idx = bm25s.BM25(method=method, k1=k1, b=b)
    idx.index(tok, show_progress=False)
    qt = bm25s.tokenize([q.question for q in qa], stopwords="en", stemmer=st, show_progress=False)
    S = np.zeros((nq, nc), np.float32)
    for i in range(nq):
        toks = [qt.vocab_inv[t] for t in qt.ids[i]] if hasattr(qt, "vocab_inv") else None
    # simpler: score each query
    inv = {v: k for k, v in qt.vocab.items()}
    for i in range(nq):
        words = [inv[t] for t in qt.ids[i]]
        words = [w for w in words if w in idx.vocab_dict]
        if words:
            S[i] = idx.get_scores(words)
    return S


def rrf(orders, k=60, w=None):
    out = []
    for i in range(nq):
        f = {}
        for li, o in enumerate(orders):
            ww = 1 if w is None else w[li]
            for r, j in enumerate(o[i][:50], 1):
                f[j] = f.get(j, 0) + ww / (k + r)
        out.append(np.array(sorted(f, key=lambda j: -f[j])))
    return out


res = {}
for stem in (False, True):
    for k1, b in ((1.5, 0.75), (1.2, 0.75), (0.9, 0.4), (1.2, 0.3), (2.0, 0.75)):
        S = bm(stem, k1=k1, b=b)
        bo = np.argsort(-S, 1)[:, :100]
        h = rrf([dorder, bo])
        print(
            f"stem={stem} k1={k1} b={b}: bm25 r5 {rec(bo):.3f} r50 {rec(bo, 50):.3f} | hybrid r5 {rec(h):.3f} r10 {rec(h, 10):.3f} r50 {rec(h, 50):.3f}"
        )
        res[(stem, k1, b)] = S
pickle.dump(res, open("/tmp/rx/bm.pkl", "wb"))
