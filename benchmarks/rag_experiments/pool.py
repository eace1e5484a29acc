import pickle

import numpy as np

from temper.rag.evaluate import is_correct

d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
bm = pickle.load(open("/tmp/rx/bm.pkl", "rb"))
chunks, V, qa, Q, rel = d["chunks"], d["V"], d["qa"], d["Q"], d["rel"]
nq = len(qa)
D = Q @ V.T
dorder = np.argsort(-D, 1)[:, :50]
orders = {"dense": dorder}
for key in [(False, 1.5, 0.75), (True, 1.2, 0.75)]:
    orders[key] = np.argsort(-bm[key], 1)[:, :50]


def rrf(os_):
    out = []
    for i in range(nq):
        f = {}
        for o in os_:
            for r, j in enumerate(o[i], 1):
                f[j] = f.get(j, 0) + 1 / (60 + r)
        out.append(sorted(f, key=lambda j: -f[j]))
    return out


orders["h_old"] = rrf([dorder, orders[(False, 1.5, 0.75)]])
orders["h_stem"] = rrf([dorder, orders[(True, 1.2, 0.75)]])
pool = set()
mention = 0
for i, q in enumerate(qa):
    for o in orders.values():
        for j in o[i][:10]:
            if rel[i, j]:
                continue
            pool.add((i, int(j)))
cand = [(i, j) for i, j in pool if is_correct(chunks[j].embed_text, qa[i])]
print(len(pool), len(cand), len({i for i, _ in cand}))
pickle.dump(dict(orders=orders, cand=cand), open("/tmp/rx/pool.pkl", "wb"))
