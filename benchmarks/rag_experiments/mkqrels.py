import json
import pickle

from temper.rag.qaset import PYTHON_DOCS_ROOT, html_visible_text, words

J = pickle.load(open("/tmp/rx/J.pkl", "rb"))
pages = {}
rows = []
bad = 0
for j in sorted((j for j in J if j["relevant"]), key=lambda j: (j["qid"], j["page"], j["phrase"])):
    p = j["page"]
    if p not in pages:
        pages[p] = words(html_visible_text((PYTHON_DOCS_ROOT / p).read_text(errors="replace")))
    if words(j["phrase"]) not in pages[p]:
        bad += 1
        print("NOT ON PAGE", j["qid"], p, repr(j["phrase"][:80]))
        continue
    rows.append({"id": j["qid"], "source": p, "evidence": " ".join(j["phrase"].split())})
seen = set()
out = []
for r in rows:
    k = (r["id"], r["source"], words(r["evidence"]))
    if k in seen:
        continue
    seen.add(k)
    out.append(r)
print(len(rows), len(out), bad)
with open("/tmp/rx/qrels.jsonl", "w") as f:
    for r in out:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
