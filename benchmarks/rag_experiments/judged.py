import json
import pickle
import random

from temper.rag.qaset import words

d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
chunks, qa, rel = d["chunks"], d["qa"], d["rel"]
J = []
for k in range(4):
    ins = [json.loads(l) for l in open(f"/tmp/rx/judge_in_{k}.jsonl")]
    outs = [json.loads(l) for l in open(f"/tmp/rx/judge_out_{k}.jsonl")]
    assert len(ins) == len(outs)
    for a, b in zip(ins, outs):
        assert a["pair"] == b["pair"]
        J.append({**a, **b})
print(len(J), sum(j["relevant"] for j in J))
bad = [j for j in J if j["relevant"] and words(j["phrase"]) not in words(j["chunk"])]
print("not verbatim", len(bad))
pickle.dump(J, open("/tmp/rx/J.pkl", "wb"))
random.seed(1)
R = [j for j in J if j["relevant"]]
N = [j for j in J if not j["relevant"]]
import sys

for j in random.sample(R, int(sys.argv[1])) + random.sample(N, int(sys.argv[2])):
    print("=" * 80)
    print(j["relevant"], j["qid"], j["question"], "| ANS", j["reference_answer"], "|", j["why"])
    print("  PHRASE:", j["phrase"])
    print("  CHUNK:", j["chunk"][:500].replace("\n", " "))
