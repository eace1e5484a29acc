"""Experiment: cross-encoder reranker from MiniLM, trained ICT-style on the corpus (no QA questions)."""

import logging
import pickle
import random
import re
import sys
import time

import bm25s
import numpy as np
import Stemmer
import torch

logging.getLogger("bm25s").setLevel(logging.WARNING)
from temper.embeddings import Embedder

torch.manual_seed(0)
random.seed(0)
np.random.seed(0)
d = pickle.load(open("/tmp/rx/data.pkl", "rb"))
prel = pickle.load(open("/tmp/rx/prel.pkl", "rb"))
chunks, V, qa, Q, rel = d["chunks"], d["V"], d["qa"], d["Q"], d["rel"]
nq, nc = rel.shape
TRAIN_SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 900
SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
VERB = re.compile(
    r"^(Return|Returns|Split|Make|Create|Convert|Raise|Set|Get|Remove|Add|Open|Close|Read|Write|Compute|Calculate|Test|Check|Encode|Decode|Parse|Format|Print|Sort|Find|Search|Replace|Join|Copy|Move|Delete|Change|Build|Generate|Start|Stop|Wait|Send|Receive|Register|Load|Save|Apply|Call|Run|Execute|Construct|Initialize|Update|Clear|Reset|Append|Insert|Extend|Count|Yield|Iterate|Map|Filter|Wrap|Return)\b"
)


def questionify(s):
    s = s.rstrip(".")
    m = VERB.match(s)
    if m:
        v = m.group(1)
        rest = s[len(v) :]
        base = v[:-1] if v.endswith("s") and v not in ("Access",) else v
        r = random.random()
        if r < 0.4:
            return f"Which function {base.lower()}s{rest}?"
        if r < 0.8:
            return f"How do I {base.lower()}{rest}?"
        return f"What can I use to {base.lower()}{rest}?"
    return s + ("?" if random.random() < 0.3 else "")


st = Stemmer.Stemmer("english")
texts = [c.embed_text for c in chunks]
tok = bm25s.tokenize(texts, stopwords="en", stemmer=st, show_progress=False)
bm = bm25s.BM25()
bm.index(tok, show_progress=False)
emb = Embedder.load()
# training examples
examples = []
order = list(range(nc))
random.shuffle(order)
for j in order:
    c = chunks[j]
    sents = [
        s.strip()
        for s in SENT.split(c.text.replace("\n", " "))
        if 6 <= len(s.split()) <= 35 and not re.search(r">>>|\{|\}|==|\(\)\s*$|;\s*$", s)
    ]
    if not sents:
        continue
    s = random.choice(sents)
    q = questionify(s)
    # remove the sentence from the passage most of the time
    ptext = c.embed_text.replace(s, " ") if random.random() < 0.8 else c.embed_text
    examples.append((q, j, ptext))
    if len(examples) >= 4000:
        break
print("examples", len(examples))
qv = emb.embed([e[0] for e in examples]).cpu().numpy()
qt = bm25s.tokenize([e[0] for e in examples], stopwords="en", stemmer=st, show_progress=False)
inv = {v: k for k, v in qt.vocab.items()}
train = []
for n, (q, j, pt) in enumerate(examples):
    dtop = np.argsort(-(V @ qv[n]))[:30]
    w = [inv[t] for t in qt.ids[n]]
    w = [x for x in w if x in bm.vocab_dict]
    btop = np.argsort(-bm.get_scores(w))[:30] if w else []
    pool = [int(x) for x in list(dtop) + list(btop) if int(x) != j]
    sent_words = set(q.lower().split())
    pool = list(dict.fromkeys(pool))
    if len(pool) < 7:
        continue
    negs = random.sample(pool[:40], 7)
    train.append((q, pt, [texts[x] for x in negs]))
print("train", len(train))


# model
class CE(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.bert = Embedder.load().model.requires_grad_(True)
        s.head = torch.nn.Linear(384, 1)

    def forward(s, ids, valid):
        h = s.bert(ids, valid)
        return s.head(h[:, 0]).squeeze(-1)


tk = emb.tokenizer
CLS, SEP = 101, 102


def pair_ids(q, p, T=192):
    qi = tk.encode(q.lower()).ids[1:-1][:48]
    pi = tk.encode(p.lower()).ids[1:-1]
    return [CLS] + qi + [SEP] + pi[: T - 3 - len(qi)] + [SEP]


def batchify(seqs):
    L = max(map(len, seqs))
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    valid = torch.zeros(len(seqs), L, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        valid[i, : len(s)] = True
    return ids, valid


model = CE()
opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
model.train()
t0 = time.time()
step = 0
QPB = 2
losses = []
est_steps = int(TRAIN_SECONDS / 0.75)
while time.time() - t0 < TRAIN_SECONDS and step * QPB < len(train):
    b = train[step * QPB : (step + 1) * QPB]
    seqs = []
    for q, p, negs in b:
        seqs += [pair_ids(q, p)] + [pair_ids(q, x) for x in negs]
    ids, valid = batchify(seqs)
    lr = 3e-5 * min(1, (step + 1) / 50) * max(0.1, 1 - step / est_steps)
    for g in opt.param_groups:
        g["lr"] = lr
    s = model(ids, valid).view(len(b), 8)
    loss = torch.nn.functional.cross_entropy(s, torch.zeros(len(b), dtype=torch.long))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())
    step += 1
    if step % 100 == 0:
        print(step, round(time.time() - t0), np.mean(losses[-100:]), flush=True)
torch.save(model.state_dict(), "/tmp/rx/ce.pt")
# eval
model.eval()
D = Q @ V.T
dord = np.argsort(-D, 1)[:, :50]
qt2 = bm25s.tokenize([q.question for q in qa], stopwords="en", stemmer=st, show_progress=False)
inv2 = {v: k for k, v in qt2.vocab.items()}
bo = []
for i in range(nq):
    w = [inv2[t] for t in qt2.ids[i]]
    w = [x for x in w if x in bm.vocab_dict]
    bo.append(np.argsort(-bm.get_scores(w))[:50])


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


def rec(o, R, k=5):
    return np.mean([R[i, list(o[i])[:k]].any() for i in range(nq)])


print("hybrid strict %.3f pooled %.3f" % (rec(h, rel), rec(h, prel)))
t = time.time()
CS = {}
with torch.no_grad():
    for i in range(nq):
        cand = h[i][:30]
        ids, valid = batchify([pair_ids(qa[i].question, texts[j]) for j in cand])
        sc = model(ids, valid).numpy()
        CS[i] = dict(zip(cand, sc))
print("rerank s/query", (time.time() - t) / nq)
pickle.dump(CS, open("/tmp/rx/cs.pkl", "wb"))
for K in (10, 20, 30):
    ro = [sorted(h[i][:K], key=lambda j: -CS[i][j]) + h[i][K:] for i in range(nq)]
    print(
        f"rerank top{K}: strict r5 {rec(ro, rel):.3f} r10 {rec(ro, rel, 10):.3f} pooled r1 {rec(ro, prel, 1):.3f} r5 {rec(ro, prel):.3f} r10 {rec(ro, prel, 10):.3f}"
    )
    for a in (0.5,):
        ro2 = []
        for i in range(nq):
            cand = h[i][:K]
            cr = {j: r for r, j in enumerate(sorted(cand, key=lambda j: -CS[i][j]), 1)}
            ro2.append(sorted(cand, key=lambda j: -(1 / (60 + cr[j]) + 1 / (60 + h[i].index(j) + 1))) + h[i][K:])
        print(f"   rrf(ce,hybrid) top{K}: strict r5 {rec(ro2, rel):.3f} pooled r5 {rec(ro2, prel):.3f}")
