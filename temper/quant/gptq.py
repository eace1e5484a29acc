"""GPTQ: int4 weights that minimise each layer's output error on calibration inputs (Frantar et al., 2022).

Round-to-nearest quantizes each weight on its own. GPTQ quantizes the columns (inputs) of a layer one at a time
and spreads each column's rounding error over the columns not yet quantized, weighted by the inverse Hessian
of the layer's squared output error, H = 2 X^T X / n (X: the layer's calibration inputs). Rows are independent
and share H, so one Cholesky factor of H^-1 serves the whole layer. Errors are pushed into the next columns
inside a block of 128 columns and into the rest of the layer once per block (the "lazy batch" update).

The model is quantized block by block ("sequential"): each block's Hessians come from the outputs of the
blocks before it as already quantized, so later blocks learn to absorb the earlier blocks' errors.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from tqdm import tqdm

from temper.models.attention import AttentionContext
from temper.quant.config import QuantConfig
from temper.quant.linear import QuantLinear
from temper.quant.model import block_linears, quantize_head, set_module
from temper.quant.tensors import effective_group_size, int4_grid


def gptq_quantize_layer(weight: torch.Tensor, H: torch.Tensor, group_size: int, symmetric: bool,
                        damp: float = 0.01, block_size: int = 128, act_order: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ of one linear layer's weight (N, K) against its input Hessian H (K, K).

    Each group's grid (scale, min) is fitted when the first of its columns comes up, on the group's weights
    as the errors of the columns quantized before have left them. With `act_order`, columns go in order of
    decreasing diag(H) (the inputs with the most energy first, while there are many columns left to absorb
    their error); groups stay runs of `group_size` consecutive columns, as our format has one grid per run.

    Args:
        damp: added to the diagonal of H, as a fraction of its mean, so that H is safely invertible.
        block_size: columns per lazy-batch update of the rest of the layer.
    Returns:
        codes (N, K) uint8 in [0, 15], scales and mins (N, K // G) fp32 (bf16-exact grids, as they are stored).
    """
    N, K = weight.shape
    G = group_size
    if K % G:
        raise ValueError(f"in_features {K} is not a multiple of the group size {G}")
    W = weight.detach().to(torch.float64, copy=True)
    H = H.to(torch.float64, copy=True)
    dead = H.diagonal() == 0  # inputs that were always 0: their weights do not matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(K, device=W.device)
    W, H = W[:, perm], H[perm][:, perm]  # from here on, column j of W is input perm[j]
    position = torch.argsort(perm)  # input k is column position[k]
    U = _inverse_cholesky(H, damp)
    codes = torch.zeros(N, K, dtype=torch.uint8, device=W.device)
    scale = torch.zeros(N, K // G, dtype=torch.float64, device=W.device)
    mins = torch.zeros_like(scale)
    is_fitted = [False] * (K // G)
    inputs = perm.tolist()
    for i1 in range(0, K, block_size):
        i2 = min(i1 + block_size, K)
        W1 = W[:, i1:i2]  # a view: the column updates below land in W
        errors = torch.zeros(N, i2 - i1, dtype=torch.float64, device=W.device)
        for i in range(i2 - i1):
            g = inputs[i1 + i] // G
            if not is_fitted[g]:
                group = _current_weights(W, position[g * G: (g + 1) * G], i2, errors[:, :i], U[i1: i1 + i])
                scale[:, g: g + 1], mins[:, g: g + 1] = _stored_grid(group, G, symmetric)
                is_fitted[g] = True
            w = W1[:, i]
            q = torch.round((w - mins[:, g]) / scale[:, g]).clamp_(0, 15)
            codes[:, inputs[i1 + i]] = q.to(torch.uint8)
            err = (w - (q * scale[:, g] + mins[:, g])) / U[i1 + i, i1 + i]
            W1[:, i + 1:].addr_(err, U[i1 + i, i1 + i + 1: i2], alpha=-1.0)
            errors[:, i] = err
        W[:, i2:].addmm_(errors, U[i1:i2, i2:], alpha=-1.0)
    return codes, scale.float(), mins.float()


def _current_weights(W: torch.Tensor, columns: torch.Tensor, block_end: int, errors: torch.Tensor,
                     U_rows: torch.Tensor) -> torch.Tensor:
    """Columns of W (none quantized yet) with every error so far applied: those past the current block have
    not yet had the lazy update of the block's errors so far, so it is applied here to a copy."""
    w = W[:, columns]  # (N, G) copy
    later = columns >= block_end
    if errors.shape[1] and bool(later.any()):
        w[:, later] -= errors @ U_rows[:, columns[later]]
    return w


def _stored_grid(w: torch.Tensor, group_size: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`int4_grid` in float64: its scales and zero points are bf16 values, exactly what QuantLinear stores and
    the kernels compute with, so the error feedback sees the grid the layer will use."""
    scale, mins = int4_grid(w, group_size, symmetric)
    return scale.double(), mins.double()


def _inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor U of (H + damp * mean(diag H) * I)^-1 = U^T U: row i of U, divided by U[i, i],
    is how a unit error on column i spreads over the columns after it."""
    H = H + damp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    L = torch.linalg.cholesky(H)
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


class _StopForward(Exception):
    """Raised once every block's inputs are recorded, to skip the final norm and the head."""


@dataclasses.dataclass
class _Batch:
    h: torch.Tensor  # (B, T, d) the next block's input
    ropes: list[tuple[torch.Tensor, torch.Tensor]]  # per block: its (cos, sin); families mix local and global
    ctx: AttentionContext  # the one the model built for this batch


def _first_block_inputs(model: nn.Module, samples: list[list[int]], batch_size: int) -> list[_Batch]:
    """Run the model's own embedding, rope and mask setup on each batch of samples, with the blocks skipped:
    the first block's input and each block's other arguments, however the family builds them."""
    layers = model.model.layers
    device = next(model.parameters()).device
    args: list[tuple] = []

    def skip(h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], ctx: AttentionContext) -> torch.Tensor:
        args.append((h, rope, ctx))
        if len(args) == len(layers):
            raise _StopForward
        return h

    batches = []
    for layer in layers:
        layer.forward = skip  # an instance attribute: nn.Module.__call__ finds it before the class's forward
    try:
        for start in range(0, len(samples), batch_size):
            args.clear()
            try:
                model(torch.tensor(samples[start: start + batch_size], device=device))
            except _StopForward:
                pass
            batches.append(_Batch(args[0][0], [rope for _, rope, _ in args], args[0][2]))
    finally:
        for layer in layers:
            del layer.forward
    return batches


def _block_hessians(layer: nn.Module, index: int, linears: dict[str, nn.Linear],
                    batches: list[_Batch]) -> dict[str, torch.Tensor]:
    """H = 2 X^T X / n of every linear of one block over all batches, X its inputs; summed in float64 from
    per-batch fp32 products, each computed once for linears that read the same tensor (q/k/v, gate/up)."""
    inputs: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            inputs[name] = args[0]
        return hook

    sums = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64, device=m.weight.device)
            for name, m in linears.items()}
    handles = [m.register_forward_hook(record(name)) for name, m in linears.items()]
    num_rows = 0
    try:
        for b in batches:
            inputs.clear()
            layer(b.h, b.ropes[index], b.ctx)
            products: list[tuple[torch.Tensor, torch.Tensor]] = []
            for name, x in inputs.items():
                xtx = next((p for seen, p in products if seen is x), None)
                if xtx is None:
                    x2 = x.reshape(-1, x.shape[-1]).float()
                    xtx = x2.T @ x2
                    products.append((x, xtx))
                sums[name] += xtx.double()
            num_rows += b.h.shape[0] * b.h.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return {name: s * (2.0 / num_rows) for name, s in sums.items()}


@torch.no_grad()  # not inference_mode: the new layers' tensors must stay usable in autograd (QLoRA)
def quantize_model_gptq(model: nn.Module, config: QuantConfig, samples: list[list[int]], progress: bool = True,
                        batch_size: int = 4, damp: float = 0.01, act_order: bool = True) -> nn.Module:
    """GPTQ int4 of every block linear, block by block, on calibration `samples` (token id lists of one length);
    the head and embedding per `config.head_bits` by round to nearest. In place.

    `config.calibration` should name the data (e.g. corpus and seed); the number and length of the samples,
    damp and act_order are added to it in `model.quant_config`.

    Args:
        batch_size: samples per forward pass of a block (the captured inputs of all samples stay in memory).
        act_order: see `gptq_quantize_layer`; on SmolLM2-135M (int4 g128 asymmetric, 64 x 512 tokens of the
            Python docs) it took held-out perplexity from 11.00 to 10.28 (fp32: 9.19; round to nearest: 12.54).
    """
    if config.method != "int4-gptq":
        raise ValueError(f"quantize_model_gptq makes int4-gptq models, the config asks for {config.method!r}")
    if not samples or len({len(s) for s in samples}) != 1:
        raise ValueError("GPTQ needs calibration samples, all of the same length")
    if any(getattr(layer.self_attn, "qkv", None) or getattr(layer.mlp, "gate_up", None)
           for layer in model.model.layers):
        raise ValueError("quantize the model before fusing its projections (fused layers bypass the linears)")
    batches = _first_block_inputs(model, samples, batch_size)
    for index, layer in enumerate(tqdm(model.model.layers, desc="GPTQ", unit="block", disable=not progress)):
        prefix = f"model.layers.{index}."
        linears = {name: m for name, m in block_linears(model) if name.startswith(prefix)}
        hessians = _block_hessians(layer, index, linears, batches)
        for name, linear in linears.items():
            set_module(model, name, _quantized(linear, hessians.pop(name), config, damp, act_order))
        for b in batches:  # the quantized block's outputs are the next block's inputs
            b.h = layer(b.h, b.ropes[index], b.ctx)
    if config.head_bits:
        quantize_head(model, config.head_bits, config.group_size, config.symmetric)
    record = {**config.calibration, "num_samples": len(samples), "seq_len": len(samples[0]), "damp": damp,
              "act_order": act_order}
    model.quant_config = dataclasses.replace(config, calibration=record)
    return model


def _quantized(linear: nn.Linear, H: torch.Tensor, config: QuantConfig, damp: float, act_order: bool) -> QuantLinear:
    group = effective_group_size(linear.in_features, config.group_size)
    codes, scale, mins = gptq_quantize_layer(linear.weight, H, group, config.symmetric, damp, act_order=act_order)
    q = QuantLinear(linear.in_features, linear.out_features, 4, group, config.symmetric, linear.bias is not None,
                    device="meta")
    q.set_codes(codes.to(linear.weight.device), scale, mins)
    if linear.bias is not None:
        q.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
    return q
