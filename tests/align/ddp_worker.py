"""Run by tests/align/test_ddp.py, alone or under torchrun: a few SFT steps on a tiny model, then the trainable
parameters (rank 0) are written to OUT for comparison."""
from __future__ import annotations

import sys

import torch

from temper.align.sft import SFTConfig, SFTTrainer
from temper.models.loader import converted_folder
from temper.models.registry import resolve
from temper.tokenizer import Tokenizer
from tests.align.conftest import tiny_model
from tests.align.test_trainer import CHATS

if __name__ == "__main__":
    out, batch_size, grad_accum = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    tokenizer = Tokenizer.from_pretrained(converted_folder(resolve("smollm2-135m-instruct")))
    config = SFTConfig(output_dir=out + ".run", batch_size=batch_size, grad_accum=grad_accum, max_steps=3,
                       learning_rate=1e-2, max_len=128, packing=False, save_model=False, lora={"r": 4})
    trainer = SFTTrainer(tiny_model(tokenizer.vocab_size), tokenizer, config, CHATS)
    trainer.train()
    if trainer.dist.main:
        torch.save({n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}, out)
