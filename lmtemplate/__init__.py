"""lmtemplate: a PyTorch Lightning research template for language models."""

from lmtemplate.registry import register_task
from lmtemplate.tasks.base import Task

__all__ = ["Task", "register_task"]
__version__ = "0.1.0"
