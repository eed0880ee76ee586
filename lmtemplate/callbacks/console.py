"""What the console shows: our errors, the run directory, a model summary, progress and the final scores.

Lines of Lightning's that say nothing about the run are dropped, each by its exact words (``quiet``), so a new
message still shows; ``tests/callbacks/test_console.py`` runs fit, validate and predict and checks that none of
them comes back.
"""

from __future__ import annotations

import logging
import re
import warnings

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

DROPPED_LINES = (  # INFO lines of Lightning's rank-zero logger, as they start
    "GPU available: False, used: False",  # on a CPU: nothing is available and nothing used
    "TPU available: False, using: 0 TPU cores",
    "HPU available: False, using: 0 HPUs",
    "💡 Tip: For seamless cloud",  # advertisements for Lightning's cloud services (litlogger, litmodels)
    "Restoring states from the checkpoint path at ",  # the next line says which checkpoint was loaded
)
DROPPED_WARNINGS = (
    # Lightning's own use of torch's pytree, on torch versions that renamed LeafSpec; nothing a user can change
    "`isinstance(treespec, LeafSpec)` is deprecated",
    # validate/test/predict load a checkpoint for its weights: the callbacks that wrote it are fit's own
    "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided",
)


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED_LINES)


def quiet() -> None:
    """Drop the lines and warnings above, once per process."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLines) for f in logger.filters):
        logger.addFilter(_DropLines())
    for message in DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message))


def synced_elsewhere(key: str) -> None:
    """``key`` is logged with the same value on every rank (a pass score gathered by the task): Lightning's advice to
    sync it across devices does not apply."""
    warnings.filterwarnings("ignore", message=re.escape(f"It is recommended to use `self.log({key!r}, ..., sync_dist=True)`"))


class Summary(ModelSummary):
    """Lightning's model summary as a plain table of the task's modules, their types and parameters, then the totals:
    without its Mode column (every module trains during fit) and FLOPs (Lightning counts them only for a module
    with an ``example_input_array``, which no task has: always 0)."""

    @staticmethod
    def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float, *args, **kwargs):
        columns = [(name, values) for name, values in summary_data if name in ("Name", "Type", "Params")]
        widths = [max(len(name), *map(len, values)) for name, values in columns]
        rows = [[name for name, _ in columns], *zip(*(values for _, values in columns))]
        print("\n".join("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows))
        print(f"{get_human_readable_count(trainable_parameters).strip()} trainable parameters of "
              f"{get_human_readable_count(total_parameters).strip()} ({model_size:,.1f} MB)\n")
