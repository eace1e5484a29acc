"""The training loop every alignment trainer shares.

One optimizer step takes a *global batch*: `batch_size` rows per micro-batch, `grad_accum` micro-batches,
on each of `world_size` processes. Each trainer says what an item is (a packed row, a preference pair, a
prompt's group of rollouts), how much it weighs (target tokens, pairs, completions) and its summed loss; the
loop divides by the weight of the whole global batch, so accumulation and data parallelism give the same
gradient as one big batch (tests/align/test_trainer.py checks both, and the 2-process run under torchrun).

The loop also owns: AdamW with warmup and cosine decay, gradient clipping, bf16 autocast where the device has
it, periodic evaluation, checkpoints that resume exactly (model, optimizer, schedule, RNG and data order),
`metrics.jsonl`, a plot of the curves and a progress bar with loss and tokens/s.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from temper.align.lora import (LoraConfig, add_trainable_rows, apply_lora, freeze_except, has_lora, merge_lora,
                               token_ids)
from temper.align.losses import cosine_schedule
from temper.models import CausalLM
from temper.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings every trainer shares; a recipe YAML sets them by name (see recipes/)."""

    output_dir: str = "runs/align"
    learning_rate: float = 2e-5
    min_lr_ratio: float = 0.1  # the cosine decays to this share of learning_rate
    warmup_steps: int = 0
    max_steps: int | None = None  # None: num_epochs over the training items
    num_epochs: float = 1.0
    batch_size: int = 4  # items per micro-batch on each process
    grad_accum: int = 1  # micro-batches per optimizer step
    max_len: int = 1024  # tokens per row
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    eval_every: int = 0  # steps between evaluations (0: only at the end)
    eval_at_start: bool = True  # also evaluate before the first step (the baseline on the curves)
    save_every: int = 0  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2
    seed: int = 0
    precision: str = "auto"  # "fp32", "bf16" (autocast) or "auto": bf16 on a GPU that has it, else fp32
    device: str = "auto"  # "auto": cuda (this process's local rank) if available, else cpu
    lora: LoraConfig | None = None  # None: full fine-tuning
    trainable: list[str] | None = None  # full fine-tuning only: name patterns to train ("!x" freezes x)
    resume: str | None = None  # "latest" or a checkpoint path
    save_model: bool = True  # write the trained model (LoRA merged) to output_dir/model at the end

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            lora = dict(self.lora)
            for key in ("targets", "trainable_tokens"):
                if key in lora:
                    lora[key] = tuple(lora[key])
            self.lora = LoraConfig(**lora)
        self.adam_betas = tuple(self.adam_betas)
        for name in ("batch_size", "grad_accum", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")


@dataclass
class DistInfo:
    """This process's place in a torchrun job (world_size 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, device_type: str) -> DistInfo:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where it pays: GPUs with bf16 (this project's CPUs lack AVX-512 BF16, so fp32 there)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class _Loss(nn.Module):
    """The trainable modules behind one forward, so that DistributedDataParallel can hook their gradients."""

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.parts = nn.ModuleDict(trainer.modules())
        self._trainer = [trainer]  # a list: not registered as a submodule

    def forward(self, micro: Any, normalizer: float) -> tuple[torch.Tensor, dict[str, float]]:
        return self._trainer[0].loss(micro, normalizer)


class Trainer:
    """Subclasses define items, their weights and the loss; see SFTTrainer for the simplest one."""

    name = "train"

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, config: TrainConfig):
        self.config = config
        self.tokenizer = tokenizer
        device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = DistInfo.from_env(device.type)
        self.device = device
        self.amp_dtype = autocast_dtype(config.precision, device)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model = model.to(device).train()
        if config.lora is not None:
            names = apply_lora(self.model, config.lora)
            if config.lora.trainable_tokens:
                add_trainable_rows(self.model, token_ids(tokenizer, config.lora.trainable_tokens))
            log.info("LoRA r=%d on %d layers%s", config.lora.r, len(names),
                     f", embedding rows of {list(config.lora.trainable_tokens)}" if config.lora.trainable_tokens
                     else "")
        else:
            freeze_except(self.model, config.trainable)
        self.output_dir = Path(config.output_dir)
        self.step = 0
        self.metrics_file = self.output_dir / "metrics.jsonl"
        self._optimizer: torch.optim.Optimizer | None = None

    # ------------------------------------------------------------------ what subclasses define
    def modules(self) -> dict[str, nn.Module]:
        """The modules whose trainable parameters the optimizer updates (the policy; heads added by subclasses)."""
        return {"model": self.model}

    def num_items(self) -> int:
        raise NotImplementedError

    def micro_batch(self, items: list[int]) -> Any:
        """The micro-batch of these training items, ready for `loss`."""
        raise NotImplementedError

    def weight(self, micro: Any) -> float:
        """How much a micro-batch counts in the step's mean: target tokens, pairs or completions."""
        raise NotImplementedError

    def loss(self, micro: Any, normalizer: float) -> tuple[torch.Tensor, dict[str, float]]:
        """The micro-batch's summed loss divided by `normalizer`, and metric *sums* to log."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def before_step(self, step: int, items: list[int]) -> None:
        """Hook run before a step's micro-batches are built (GRPO and PPO generate their rollouts here)."""

    # ------------------------------------------------------------------ the loop
    @property
    def global_batch(self) -> int:
        c = self.config
        return c.batch_size * c.grad_accum * self.dist.world_size

    def total_steps(self) -> int:
        if self.config.max_steps is not None:
            return self.config.max_steps
        return max(1, math.ceil(self.num_items() * self.config.num_epochs / self.global_batch))

    def step_items(self, step: int) -> list[int]:
        """The global batch of item indices for a step: epochs are reshuffled from the seed, so a resumed run
        sees exactly the items the uninterrupted run would have."""
        n, g = self.num_items(), self.global_batch
        start = step * g
        items = []
        while len(items) < g:
            epoch, offset = divmod(start + len(items), n)
            order = _epoch_order(n, self.config.seed, epoch)
            items.extend(order[offset: offset + g - len(items)])
        return items

    def rank_micro_batches(self, items: list[int]) -> list[list[int]]:
        """This process's micro-batches of a global batch (round-robin over ranks)."""
        bs = self.config.batch_size
        chunks = [items[i: i + bs] for i in range(0, len(items), bs)]
        return chunks[self.dist.rank:: self.dist.world_size]

    def trainable_parameters(self) -> list[nn.Parameter]:
        seen, params = set(), []
        for module in self.modules().values():
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            params = self.trainable_parameters()
            if not params:
                raise ValueError("nothing to train: every parameter is frozen (check lora / trainable)")
            c = self.config
            fused = self.device.type == "cuda"
            self._optimizer = torch.optim.AdamW(params, lr=c.learning_rate, betas=c.adam_betas,
                                                weight_decay=c.weight_decay, fused=fused or None)
        return self._optimizer

    def lr_at(self, step: int) -> float:
        c = self.config
        return c.learning_rate * cosine_schedule(step, self.total_steps(), c.warmup_steps, c.min_lr_ratio)

    def _all_reduce(self, values: list[float]) -> list[float]:
        if self.dist.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, step: int, wrapped: nn.Module) -> dict[str, float]:
        """One optimizer step over the step's global batch; returns the logged metrics."""
        items = self.step_items(step)
        self.before_step(step, items)
        micros = [self.micro_batch(m) for m in self.rank_micro_batches(items)]
        return self.optimize(step, micros, wrapped)

    def optimize(self, step: int, micros: list[Any], wrapped: nn.Module) -> dict[str, float]:
        """Accumulate the micro-batches' gradients, clip, and take one optimizer step."""
        local_weight = sum(self.weight(m) for m in micros)
        normalizer = self._all_reduce([local_weight])[0]
        opt = self.optimizer()
        for group in opt.param_groups:
            group["lr"] = self.lr_at(step)
        opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        # DDP averages gradients over processes; our normalizer already counts every process's items
        scale = float(self.dist.world_size)
        for i, micro in enumerate(micros):
            sync = i == len(micros) - 1 or not isinstance(wrapped, nn.parallel.DistributedDataParallel)
            with (contextlib.nullcontext() if sync else wrapped.no_sync()), self._autocast():
                loss, stats = wrapped(micro, normalizer)
            (loss * scale).backward()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        grad_norm = None
        if self.config.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.config.max_grad_norm))
        opt.step()
        keys = sorted(sums)
        totals = dict(zip(keys, self._all_reduce([sums[k] for k in keys])))
        metrics = self.summarize(totals, normalizer)
        metrics["lr"] = self.lr_at(step)
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        return metrics

    def summarize(self, totals: dict[str, float], normalizer: float) -> dict[str, float]:
        """Turn the step's metric sums into means (sums named `*_sum` are divided by the normalizer)."""
        out = {}
        for k, v in totals.items():
            if k.endswith("_sum"):
                out[k[:-4]] = v / max(normalizer, 1e-9)
            else:
                out[k] = v
        return out

    def train(self) -> dict[str, Any]:
        """Run to the end (resuming first if asked); returns the last train and eval metrics."""
        c = self.config
        if self.dist.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.json").write_text(json.dumps(_jsonable(dataclasses.asdict(c)), indent=2))
        if c.resume:
            self.load_checkpoint(self.find_checkpoint(c.resume))
        elif self.dist.main and self.metrics_file.exists():
            self.metrics_file.unlink()  # a fresh run starts a fresh log
        wrapped: nn.Module = _Loss(self)
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
        total = self.total_steps()
        last_eval: dict[str, float] = {}
        metrics: dict[str, float] = {}
        if c.eval_at_start and self.step == 0:
            last_eval = self.run_eval()
        bar = tqdm(total=total, initial=self.step, desc=self.name, unit="step", disable=not self.dist.main)
        t0 = time.perf_counter()
        while self.step < total:
            start = time.perf_counter()
            metrics = self.train_step(self.step, wrapped)
            self.step += 1
            elapsed = time.perf_counter() - start
            if "tokens" in metrics:
                metrics["tokens_per_s"] = metrics["tokens"] / elapsed
            metrics["step_s"] = elapsed
            self.log_metrics("train", metrics)
            bar.set_postfix({k: f"{metrics[k]:.4g}" for k in ("loss", "reward", "tokens_per_s") if k in metrics},
                            refresh=False)
            bar.update(1)
            if c.eval_every and self.step % c.eval_every == 0 and self.step < total:
                last_eval = self.run_eval()
            if c.save_every and self.step % c.save_every == 0 and self.step < total:
                self.save_checkpoint()
        bar.close()
        last_eval = self.run_eval() or last_eval
        self.save_checkpoint()
        if self.dist.main:
            self.plot()
            if c.save_model:
                self.save_model(self.output_dir / "model")
        log.info("%s: %d steps in %.0f s", self.name, total, time.perf_counter() - t0)
        return {"train": metrics, "eval": last_eval}

    def run_eval(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad(), self._autocast():
            result = self.evaluate()
        self.model.train()
        if result:
            self.log_metrics("eval", result)
        return result

    # ------------------------------------------------------------------ logging, checkpoints, saving
    def log_metrics(self, split: str, metrics: dict[str, float]) -> None:
        record = {"step": self.step, "split": split, "time": time.time(), **metrics}
        if self.dist.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            if split == "eval":
                log.info("step %d eval: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def plot(self) -> Path | None:
        """curves.png next to metrics.jsonl: the loss and up to five other metrics against the step."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log.warning("matplotlib is not installed: no curves.png (pip install matplotlib)")
            return None
        history = read_metrics(self.metrics_file)
        # a train metric and its eval_ twin share a panel; eval-only metrics get their own
        names = [k for k in ("loss", "reward", "kl", "accuracy", "margin", "entropy", "ended_turn", "clipfrac")
                 if any(k in r or f"eval_{k}" in r for r in history)]
        extra = {k[5:] for r in history if r["split"] == "eval" for k in r if k.startswith("eval_")}
        names = (names + sorted(extra - set(names)))[:6]
        if not names:
            return None
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
        for ax, name in zip(axes[0], names):
            for split, key, style in (("train", name, "-"), ("eval", f"eval_{name}", "o-")):
                pts = [(r["step"], r[key]) for r in history if r["split"] == split and key in r]
                if pts:
                    ax.plot(*zip(*pts), style, label=split, markersize=3)
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.suptitle(f"temper align {self.name}: {self.output_dir.name}", fontsize=9)
        fig.tight_layout()
        path = self.output_dir / "curves.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = {}
        for prefix, module in self.modules().items():
            for name, p in module.named_parameters():
                if p.requires_grad:
                    state[f"{prefix}.{name}"] = p.detach().cpu().clone()
        return state

    def save_checkpoint(self) -> Path | None:
        if not self.dist.main:
            return None
        folder = self.output_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{self.step:06d}.pt"
        state = {
            "step": self.step,
            "trainable": self.trainable_state(),
            "optimizer": self.optimizer().state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "extra": self.extra_state(),
            "config": _jsonable(dataclasses.asdict(self.config)),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in sorted(folder.glob("step-*.pt"))[: -self.config.keep_checkpoints]:
            old.unlink()
        return path

    def find_checkpoint(self, where: str) -> Path:
        if where != "latest":
            return Path(where)
        found = sorted((self.output_dir / "checkpoints").glob("step-*.pt"))
        if not found:
            raise FileNotFoundError(f"resume: no checkpoint in {self.output_dir / 'checkpoints'}")
        return found[-1]

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        params = {f"{prefix}.{name}": p for prefix, module in self.modules().items()
                  for name, p in module.named_parameters() if p.requires_grad}
        missing = set(params) - set(state["trainable"])
        if missing:
            raise ValueError(f"checkpoint {path} lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}; "
                             "was it written with the same lora/trainable settings?")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["trainable"][name])
        self.optimizer().load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.load_extra_state(state["extra"])
        self.step = state["step"]
        log.info("resumed from %s at step %d", path, self.step)

    def save_model(self, folder: Path) -> Path:
        """The policy with LoRA merged, as a folder `temper serve --model` and transformers load."""
        from temper.chat_templates import default_chat_template
        from temper.models.loader import save_pretrained

        if has_lora(self.model):
            merge_lora(self.model)
        if self.tokenizer.chat_template is None:  # a base model's turn format becomes the instruct template
            self.tokenizer.chat_template = default_chat_template(lambda t: self.tokenizer.token_to_id(t) is not None)
        self.model.eval()
        return save_pretrained(self.model, self.tokenizer, folder, source=f"temper align {self.name}")


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i: i + size]


__all__ = ["DistInfo", "TrainConfig", "Trainer", "chunks", "read_metrics"]
