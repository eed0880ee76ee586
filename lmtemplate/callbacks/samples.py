"""Text samples in TensorBoard's text tab at every validation."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger


class TextSamples(L.Callback):
    """Logs ``pl_module.text_samples()`` (a list of (prompt, completion)) as Markdown after each validation."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        rows = "\n".join(f"| `{p!r}` | {c!r} |" for p, c in pl_module.text_samples())
        table = f"| prompt | completion |\n|---|---|\n{rows}"
        for logger in loggers:
            logger.experiment.add_text("samples", table, global_step=trainer.global_step)
