"""Transformer models."""

from lmtemplate.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
