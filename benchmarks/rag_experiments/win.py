import pickle
import re
import time

import numpy as np

from temper.embeddings import Embedder

d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
p = pickle.load(open("/tmp/rx/pool.pkl", "rb"))
chunks = d["chunks"]
cands = set()
for o in (p["orders"]["h_stem"], p["orders"]["h_old"]):
    for row in o:
        cands.update(int(j) for j in row[:50])
print(len(cands))
SENT = re.compile(r"(?<=[.!?:])\s+|\n+")


def windows(c):
    head = c.embed_text[: len(c.embed_text) - len(c.text)].strip()
    sents = [s.strip() for s in SENT.split(c.text) if s.strip()]
    out = []
    for i in range(max(len(sents) - 1, 1)):
        w = " ".join(sents[i : i + 2])
        out.append((head + " " + w)[:600])
    return out or [c.embed_text[:600]]


emb = Embedder.load()
ids = sorted(cands)
W = []
owner = []
for j in ids:
    for w in windows(chunks[j]):
        W.append(w)
        owner.append(j)
print(len(W))
t = time.time()
E = emb.embed(W).cpu().numpy()
print(time.time() - t)
pickle.dump(dict(owner=np.array(owner), E=E), open("/tmp/rx/win.pkl", "wb"))
