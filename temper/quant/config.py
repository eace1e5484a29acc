"""`QuantConfig`: how a checkpoint was (or is to be) quantized; saved in config.json as `quantization_config`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from temper.errors import ModelFormatError
from temper.quant.tensors import INT4_GROUP_SIZES

METHODS = ("int8", "int4-rtn", "int4-gptq", "gguf")
QUANT_METHOD = "temper"  # the `quant_method` tag in config.json, as HF names its quantizers


@dataclass(frozen=True)
class QuantConfig:
    """A weight-only quantization recipe.

    Attributes:
        method: int8 (per output channel, round to nearest), int4-rtn (group-wise, round to nearest),
            int4-gptq (group-wise, GPTQ on a calibration set), or gguf (the GGUF file's own blocks).
        group_size: int4 inputs per scale; a layer whose input width it does not divide uses the largest
            smaller kernel size that does (SmolLM2's 576-wide inputs take 64 when 128 is asked).
        symmetric: int4 grids centred on zero (one scale per group) instead of min/max fitted (scale and min).
        head_bits: bits of the output head and the input embedding (one table when the model ties them):
            0 keeps them in float, 8 is int8 per row, 4 int4 with the same groups as the blocks.
        calibration: how a calibrated method was fitted (data, samples, tokens), for the record.
    """

    method: str = "int4-rtn"
    group_size: int = 128
    symmetric: bool = False
    head_bits: int = 8
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"quantization method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.bits == 4 and self.group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"--group-size must be one of {INT4_GROUP_SIZES}, got {self.group_size}")
        if self.head_bits not in (0, 4, 8):
            raise ValueError(f"--head-bits must be 0 (float), 4 or 8, got {self.head_bits}")

    @classmethod
    def from_name(cls, name: str) -> QuantConfig:
        """"int8" or "int4" (round to nearest, default groups), or a method name."""
        return cls(method={"int4": "int4-rtn"}.get(name, name))

    @property
    def bits(self) -> int:
        return 8 if self.method == "int8" else 4

    def to_json(self) -> dict[str, Any]:
        return {"quant_method": QUANT_METHOD, "bits": self.bits, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> QuantConfig:
        if raw.get("quant_method") != QUANT_METHOD:
            raise ModelFormatError(f"quantization_config.quant_method {raw.get('quant_method')!r} is not one temper "
                                   f"reads ({QUANT_METHOD!r}); GPTQ/AWQ checkpoints of other tools are not supported")
        try:
            return cls(method=raw["method"], group_size=raw.get("group_size", 128),
                       symmetric=raw.get("symmetric", False), head_bits=raw.get("head_bits", 8),
                       calibration=raw.get("calibration", {}))
        except (KeyError, ValueError) as e:
            raise ModelFormatError(f"invalid quantization_config in config.json: {e}") from None
