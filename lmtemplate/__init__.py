"""lmtemplate: a PyTorch Lightning research template for language models."""

from lmtemplate.registry import register_task

__all__ = ["register_task"]
__version__ = "0.1.0"
