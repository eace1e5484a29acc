"""Alignment: SFT, reward models, DPO, PPO and GRPO on temper models (see docs/alignment.md)."""
