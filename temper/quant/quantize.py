"""`temper quantize`: load a float model, quantize it (RTN or GPTQ), optionally measure it, save a checkpoint."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from temper.errors import TemperError
from temper.quant.config import QuantConfig
from temper.quant.model import quantize_model, weight_bytes

log = logging.getLogger(__name__)


@dataclass
class QuantizeReport:
    output: Path
    config: QuantConfig
    bytes_before: int
    bytes_after: int
    seconds: float
    perplexity_before: float | None = None
    perplexity_after: float | None = None

    def lines(self) -> list[str]:
        c = self.config
        scheme = "" if c.bits == 8 else f", group {c.group_size}, {'symmetric' if c.symmetric else 'asymmetric'}"
        ratio = self.bytes_after / self.bytes_before
        out = [f"wrote {self.output} ({c.method}{scheme}, head {c.head_bits or 'float'})",
               f"weights: {self.bytes_before / 1e6:.1f} MB -> {self.bytes_after / 1e6:.1f} MB ({ratio:.3f}x) "
               f"in {self.seconds:.1f} s"]
        if self.perplexity_before is not None:
            change = self.perplexity_after / self.perplexity_before - 1
            out.append(f"held-out perplexity (Python docs): {self.perplexity_before:.3f} -> "
                       f"{self.perplexity_after:.3f} ({change:+.2%})")
        return out


def quantize_checkpoint(model_path: Path, output: Path, config: QuantConfig, calibration_samples: int = 64,
                        calibration_seq_len: int = 512, seed: int = 0, eval_tokens: int = 0,
                        force: bool = False) -> QuantizeReport:
    """Quantize the model at `model_path` per `config` and save it to `output` (an HF-style folder)."""
    from temper.models.loader import load, save_pretrained

    if output.exists() and any(output.iterdir()) and not force:
        raise TemperError(f"{output} exists and is not empty; choose another --output or pass --force")
    start = time.perf_counter()
    loaded = load(model_path)
    if getattr(loaded.model, "quant_config", None) is not None:
        raise TemperError(f"{model_path} is already quantized ({loaded.model.quant_config.method})")
    model, tokenizer = loaded.model, loaded.tokenizer
    before = weight_bytes(model)
    heldout = None
    ppl_before = ppl_after = None
    if eval_tokens:
        from temper.quant.corpus import heldout_ids, perplexity

        heldout = heldout_ids(tokenizer, eval_tokens)
        ppl_before = perplexity(model, heldout, progress=True)
    if config.method == "int4-gptq":
        from temper.quant.corpus import CORPUS_NAME
        from temper.quant.corpus import calibration_samples as samples_of
        from temper.quant.gptq import quantize_model_gptq

        samples = samples_of(tokenizer, num_samples=calibration_samples, seq_len=calibration_seq_len, seed=seed)
        config = dataclasses.replace(config, calibration={"corpus": CORPUS_NAME, "seed": seed})
        quantize_model_gptq(model, config, samples, progress=True)
    else:
        quantize_model(model, config)
    if heldout is not None:
        ppl_after = perplexity(model, heldout, progress=True)
    if output.exists() and force:
        shutil.rmtree(output)
    save_pretrained(model, tokenizer, output, source=str(model_path))
    return QuantizeReport(output, model.quant_config, before, weight_bytes(model), time.perf_counter() - start,
                          ppl_before, ppl_after)
