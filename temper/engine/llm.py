"""The offline API: `LLM(model).generate(prompts, params)`, in the style of vLLM."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.outputs import RequestOutput
from temper.engine.sampling_params import SamplingParams

Prompt = str | list[int] | list[dict[str, str]]  # text, token ids, or chat messages


class LLM:
    """Load a model (registered name, GGUF file or HF folder) and generate with continuous batching."""

    def __init__(self, model: str = "smollm2-135m-instruct", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, quantization: str | None = None, **engine_options):
        from temper.models.loader import load
        from temper.models.registry import resolve

        loaded = load(resolve(model), device=device, dtype=dtype, quantization=quantization)
        self.model_name = model
        self.tokenizer = loaded.tokenizer
        self.engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(**engine_options))

    @classmethod
    def from_loaded(cls, loaded, name: str, **engine_options) -> LLM:
        """An LLM around a model already loaded (temper.models.loader.load), e.g. with the CLI's device flags."""
        llm = cls.__new__(cls)
        llm.model_name = name
        llm.tokenizer = loaded.tokenizer
        llm.engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(**engine_options))
        return llm

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: chat messages go through the chat template, text is encoded as is."""
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        if prompt and isinstance(prompt[0], dict):
            return self.tokenizer.apply_chat_template(prompt, tokenize=True)
        return list(prompt)

    def generate(self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Generate for every prompt (all queued at once) and return the outputs in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], (int, dict))):
            prompts = [prompts]
        params = params or SamplingParams()
        params_list = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} sampling params")
        ids = [self.engine.add_request(self.encode(p), sp) for p, sp in zip(prompts, params_list)]
        done: dict[str, RequestOutput] = {}
        with tqdm(total=len(ids), desc="generating", unit="req", disable=not use_tqdm) as bar:
            while self.engine.has_unfinished_requests():
                finished = [out for out in self.engine.step() if out.finished]
                for out in finished:
                    done[out.request_id] = out
                if finished:  # stats() walks every block table: only when the bar moves
                    stats = self.engine.stats()
                    bar.set_postfix(tok_s=f"{stats.generation_tokens_per_s:.0f}", run=stats.num_running,
                                    refresh=False)
                    bar.update(len(finished))
        return [done[i] for i in ids]

    def chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None) -> RequestOutput:
        return self.generate([messages], params, use_tqdm=False)[0]
