"""TensorBoard extras: text samples at every validation, and the run's config in the HPARAMS tab."""

from __future__ import annotations

import re
from contextlib import nullcontext

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from torch.utils.tensorboard.summary import hparams


def _tensorboards(trainer: L.Trainer) -> list[TensorBoardLogger]:
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def _full_parameters(trainer: L.Trainer):
    """Under FSDP, gather every parameter for code that calls the model outside FSDP's forward (on every rank)."""
    if not isinstance(trainer.strategy, FSDPStrategy):
        return nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False)


class TextSamples(L.Callback):
    """Logs ``pl_module.text_samples()`` as a table (columns ``pl_module.sample_columns``) after each validation.

    Sampling runs in the trainer's precision context (autocast for mixed precision)
    and, under FSDP, with the full parameters gathered.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        loggers = _tensorboards(trainer)
        with _full_parameters(trainer), trainer.precision_plugin.forward_context():  # every rank: FSDP gathers
            samples = pl_module.text_samples() if loggers else []
        if not samples:
            return
        columns = pl_module.sample_columns
        rows = "".join("| " + " | ".join(map(cell, row)) + " |\n" for row in samples)
        table = f"| {' | '.join(columns)} |\n|{'---|' * len(columns)}\n{rows}"
        for logger in loggers:
            logger.experiment.add_text("samples", table, global_step=trainer.global_step)


def cell(text: str) -> str:
    """Text as a Markdown table cell shows it: Markdown's characters escaped, line breaks kept, empty marked."""
    escaped = re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text).replace("\n", "<br>")
    return escaped if text else "*(empty)*"


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and None become strings, as TensorBoard's HPARAMS tab needs."""
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class HParams(L.Callback):
    """Writes the module's hyperparameters to the HPARAMS tab, paired with its monitored metric."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric = trainer.checkpoint_callback.monitor
        for logger in _tensorboards(trainer):
            writer = logger.experiment._get_file_writer()
            for summary in hparams(flatten(dict(pl_module.hparams)), {metric: 0.0}):
                writer.add_summary(summary)
