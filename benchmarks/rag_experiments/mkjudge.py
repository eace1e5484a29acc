import json
import pickle
import random

d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
p = pickle.load(open("/tmp/rx/pool.pkl", "rb"))
chunks, qa = d["chunks"], d["qa"]
cand = sorted(p["cand"])
# shuffle chunk order within a question so rank is not visible
random.seed(0)
byq = {}
for i, j in cand:
    byq.setdefault(i, []).append(j)
qs = sorted(byq)
parts = [[], [], [], []]
sizes = [0] * 4
for i in qs:
    k = sizes.index(min(sizes))
    js = byq[i][:]
    random.shuffle(js)
    for j in js:
        q = qa[i]
        c = chunks[j]
        parts[k].append(
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
    sizes[k] += len(byq[i])
for k, rows in enumerate(parts):
    with open(f"/tmp/rx/judge_in_{k}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
print(sizes)
