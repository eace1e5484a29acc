import json
import pickle
import random

import numpy as np

from temper.rag.evaluate import is_correct

d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
bm = pickle.load(open("/tmp/rx/bm.pkl", "rb"))
J = pickle.load(open("/tmp/rx/J.pkl", "rb"))
prel = pickle.load(open("/tmp/rx/prel.pkl", "rb"))
chunks, V, qa, Q, rel = d["chunks"], d["V"], d["qa"], d["Q"], d["rel"]
nq = len(qa)
D = Q @ V.T
S = bm[(True, 1.5, 0.75)]
judged = {(j["qid"], j["page"], j["chunk"]) for j in J}


def fuse(i, w=0.65):
    c = np.union1d(np.argsort(-D[i])[:50], np.argsort(-S[i])[:50])
    d_, s_ = D[i, c], S[i, c]
    d_ = (d_ - d_.min()) / (np.ptp(d_) + 1e-9)
    s_ = (s_ - s_.min()) / (np.ptp(s_) + 1e-9)
    return c[np.argsort(-(w * d_ + (1 - w) * s_))]


new = []
for i, q in enumerate(qa):
    for j in fuse(i)[:10]:
        c = chunks[j]
        if prel[i, j]:
            continue
        if (q.id, c.metadata.get("path"), c.embed_text) in judged:
            continue
        if is_correct(c.embed_text, q):
            new.append((i, int(j)))
print(len(new), len({i for i, _ in new}))
random.seed(1)
random.shuffle(new)
with open("/tmp/rx/judge_in_4.jsonl", "w") as f:
    for i, j in sorted(new):
        q = qa[i]
        c = chunks[j]
        f.write(
            json.dumps(
                {
                    "pair": f"{i}:{j}",
                    "qid": q.id,
                    "question": q.question,
                    "reference_answer": q.answer,
                    "accepted_forms": q.accept,
                    "page": c.metadata.get("path"),
                    "chunk": c.embed_text,
                }
            )
            + "\n"
        )
