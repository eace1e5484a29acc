"""Load collection + QA into a pickle for fast experiments."""

import os
import pickle

import numpy as np

os.environ.setdefault("TEMPER_RAG_STORE", "/tmp/ragw/store.db")
from temper.embeddings import Embedder
from temper.rag.evaluate import relevant
from temper.rag.qaset import load_qa
from temper.rag.store import open_store

st = open_store()
chunks = list(st.iter_chunks("pydocs"))
ids = [c.id for c in chunks]
V = st.get_vectors("pydocs", ids)
qa = [q for q in load_qa() if q.answerable]
emb = Embedder.load()
Q = emb.embed([q.question for q in qa]).cpu().numpy()
rel = np.zeros((len(qa), len(chunks)), bool)
for i, q in enumerate(qa):
    for j, c in enumerate(chunks):
        if c.metadata.get("path") == q.source or c.source.endswith("/" + q.source):
            rel[i, j] = relevant(c, q)
pickle.dump(dict(chunks=chunks, V=V, qa=qa, Q=Q, rel=rel), open("/tmp/rx/data.pkl", "wb"))
print(len(chunks), V.shape, rel.sum(1).min())
