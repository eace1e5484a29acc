"""Weight-only quantization: int8 and int4 layers, round-to-nearest and calibrated (GPTQ), GGUF blocks, checkpoints."""
from temper.quant.linear import QuantEmbedding, QuantLinear, TiedQuantHead

__all__ = ["QuantEmbedding", "QuantLinear", "TiedQuantHead"]
