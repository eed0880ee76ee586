"""Guards for a training run: stop cleanly on SIGINT/SIGTERM, stop at the first non-finite loss.

Both act in ``on_train_batch_end``, after the optimizer step and before ModelCheckpoint's hooks (Lightning
runs checkpoint callbacks last), and stop by raising ``Stopped``: Lightning then skips the rest of the step
(validation and its checkpoints) and ``on_train_end``, and ModelCheckpoint saves nothing on exceptions
(``save_on_exception`` is off). The CLI prints the message, without a traceback, and exits with ``exit_code``.
"""

from __future__ import annotations

import math
import signal
import threading

import lightning as L
import torch

EXIT_NON_FINITE = 3


class Stopped(Exception):
    """Training stopped on purpose; ``str()`` says why and what to do next."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopOnSignal(L.Callback):
    """SIGINT (Ctrl-C) or SIGTERM during training: save last.ckpt at the next step's end, stop, exit 128 + signal.

    Not at the end of an epoch's last batch: that step ends where the run continues (or ends at max_steps).

    The handlers only note the signal; they are installed in ``on_train_start``, after Lightning registered its
    own SIGTERM handler, which they replace until training ends. So Lightning never sees the SIGTERM and never
    raises its SIGTERMException (which would leave the loop without a checkpoint, with exit code 0): this
    callback is the one path. Installing them in ``on_fit_start`` would not do: Lightning would record them as
    the handlers to restore after fit. A second signal goes to the previous handler (Ctrl-C twice: stop now).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signum = 0
        if threading.current_thread() is threading.main_thread():  # the only thread that may set handlers
            self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}

    def _note(self, signum: int, frame) -> None:
        self.signum = signum
        signal.signal(signum, self._previous[signum])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loop = trainer.fit_loop.epoch_loop
        if loop._should_accumulate():
            return  # checkpoints hold no partly accumulated gradients: stop after the optimizer step
        if loop._num_ready_batches_reached():
            return  # Lightning resumes an epoch's last batch end as a new epoch left half-started: stop a step later
        signum = self.signum
        if trainer.world_size > 1:  # every process must stop at the same batch: one tiny all-reduce per step
            signum = int(trainer.strategy.reduce(torch.tensor(signum, device=pl_module.device), reduce_op="max"))
        if not signum:
            return
        checkpoint = trainer.checkpoint_callback
        path = checkpoint.format_checkpoint_name({}, checkpoint.CHECKPOINT_NAME_LAST)
        checkpoint.last_model_path = path  # ModelCheckpoint's state, saved in the file, then names this file
        trainer.save_checkpoint(path, weights_only=False)
        raise Stopped(
            f"interrupted at step {trainer.global_step} by {signal.Signals(signum).name}; checkpoint saved to {path}; "
            f"resume with: python -m lmtemplate fit --ckpt {path}",
            128 + signum,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class StopOnNonFiniteLoss(L.Callback):
    """A nan or inf training loss stops the run (exit 3) before any checkpoint takes the weights it produced.

    Checked every step: ``.item()`` makes a GPU wait for the step to finish (as the progress bar does), a cost
    worth paying to never save a poisoned checkpoint. Under DDP the loss is summed across
    processes, so all of them see a non-finite loss anywhere and stop at the same step.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # the step returned no loss
        value = trainer.strategy.reduce(loss.detach().clone(), reduce_op="sum").item()  # reduce works in place
        if math.isfinite(value):
            return
        last = trainer.checkpoint_callback.last_model_path
        good = f"The last good checkpoint is {last}" if last else "No checkpoint was saved before it"
        raise Stopped(f"non-finite loss ({value}) at step {trainer.global_step}; stopped. {good}.", EXIT_NON_FINITE)
