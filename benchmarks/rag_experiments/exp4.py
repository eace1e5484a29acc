import logging
import pickle

import bm25s
import numpy as np
import Stemmer

logging.getLogger("bm25s").setLevel(logging.WARNING)
d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
prel = pickle.load(open("/tmp/rx/prel.pkl", "rb"))
chunks, V, qa, Q, rel = d["chunks"], d["V"], d["qa"], d["Q"], d["rel"]
nq, nc = rel.shape
st = Stemmer.Stemmer("english")


def scores(txts, method="lucene"):
    tok = bm25s.tokenize(txts, stopwords="en", stemmer=st, show_progress=False)
    idx = bm25s.BM25(method=method)
    idx.index(tok, show_progress=False)
    qt = bm25s.tokenize([q.question for q in qa], stopwords="en", stemmer=st, show_progress=False)
    inv = {v: k for k, v in qt.vocab.items()}
    S = np.zeros((nq, nc), np.float32)
    for i in range(nq):
        w = [inv[t] for t in qt.ids[i]]
        w = [x for x in w if x in idx.vocab_dict]
        if w:
            S[i] = idx.get_scores(w)
    return S


def rec(o, R, k=5):
    return np.mean([R[i, o[i][:k]].any() for i in range(nq)])


D = Q @ V.T
dord = np.argsort(-D, 1)[:, :50]


def rrf(lists, k=60, w=None):
    out = []
    for i in range(nq):
        f = {}
        for li, o in enumerate(lists):
            for r, j in enumerate(o[i][:50], 1):
                f[j] = f.get(j, 0) + (1 if w is None else w[li]) / (k + r)
        out.append(sorted(f, key=lambda j: -f[j]))
    return out


heads = [c.embed_text[: len(c.embed_text) - len(c.text)] for c in chunks]
sym = [(c.metadata.get("symbol") or "") for c in chunks]
base = scores([c.embed_text for c in chunks])
variants = {
    "base": base,
    "head x2": scores([h + " " + c.embed_text for h, c in zip(heads, chunks)]),
    "sym x3": scores([(s + " ") * 2 + c.embed_text for s, c in zip(sym, chunks)]),
    "text only": scores([c.text for c in chunks]),
    "bm25+": None,
}
tok = None
for name, S in variants.items():
    if S is None:
        continue
    bo = np.argsort(-S, 1)[:, :50]
    h = rrf([dord, bo])
    print(
        f"{name}: bm25 strict {rec(bo, rel):.3f} pooled {rec(bo, prel):.3f} | hybrid strict {rec(h, rel):.3f} pooled {rec(h, prel):.3f} r10p {rec(h, prel, 10):.3f}"
    )
# header-only lexical as third list
Sh = scores([h or "x" for h in heads])
ho = np.argsort(-Sh, 1)[:, :50]
bo = np.argsort(-base, 1)[:, :50]
for w in ([1, 1, 0.5], [1, 1, 1]):
    h = rrf([dord, bo, ho], w=w)
    print("3-list head", w, f"strict {rec(h, rel):.3f} pooled {rec(h, prel):.3f}")
