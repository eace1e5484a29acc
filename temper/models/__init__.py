"""Plain-PyTorch model definitions, their config, loaders and the registry of packaged models."""
from temper.models.config import ModelConfig
from temper.models.gemma3 import Gemma3ForCausalLM
from temper.models.llama import LlamaForCausalLM
from temper.models.transformer import CausalLM

FAMILIES: dict[str, type[CausalLM]] = {"llama": LlamaForCausalLM, "gemma3": Gemma3ForCausalLM}


def build_model(config: ModelConfig) -> CausalLM:
    """An uninitialized model of the config's architecture (use on the meta device, then load weights)."""
    return FAMILIES[config.family](config)


__all__ = ["CausalLM", "FAMILIES", "Gemma3ForCausalLM", "LlamaForCausalLM", "ModelConfig", "build_model"]
