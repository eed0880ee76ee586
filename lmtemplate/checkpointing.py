"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``, checked on load.

Lightning hands checkpoint reads and writes to the ``CheckpointIO`` plugin that ``run.build_trainer``
passes in, under every strategy lmtemplate uses except FSDP: it reads checkpoints and writes sharded ones
by itself (its full checkpoints are written here).
"""

from __future__ import annotations

import math
import os
import pickle
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loops.utilities import _is_max_limit_reached
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer import call

from lmtemplate.config import ConfigError
from lmtemplate.files import WRITE_ERRORS, atomic_file, cannot_write


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        """Write through ``atomic_file`` (a temporary file, fsynced, renamed over ``path``): a crash mid-write
        leaves the previous file whole. A full disk or a folder that cannot be written is a ConfigError naming
        the path, the space the checkpoint needs and the space free."""
        path = Path(path)
        try:
            with atomic_file(path, binary=True) as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno not in WRITE_ERRORS:
                raise
            raise ConfigError(cannot_write(path, e, _tensor_bytes(checkpoint))) from None

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        # ddp_spawn hands the trained weights back to the main process in a plain state dict, ".temp.ckpt"
        whole = Path(path).name != ".temp.ckpt"
        return read_checkpoint(path, map_location, weights_only=weights_only is not False, lightning=whole)


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def read_checkpoint(path, map_location="cpu", weights_only: bool = True, mmap: bool = False, lightning: bool = True) -> dict:
    """Load with ``weights_only=True`` unless the caller asks for False, so a checkpoint cannot run code.

    Our checkpoints hold only tensors, numbers, strings and plain containers (the task stores its hparams
    as ``dataclasses.asdict(cfg)``), so they load as they are. Unless ``lightning`` is false (Lightning's own
    temporary weight file), a file that is not a whole Lightning
    checkpoint raises a ConfigError that says what is wrong with it. ``mmap`` reads lazily: a cheap check.
    """
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise  # the error names the path
    except Exception as e:
        raise ConfigError(f"checkpoint {path}: {_what_is_wrong(Path(path), e)}") from e
    if lightning and (not isinstance(checkpoint, dict) or "state_dict" not in checkpoint):
        raise ConfigError(f"checkpoint {path}: a PyTorch file but not a Lightning checkpoint (it has no 'state_dict')")
    return checkpoint


RECORD = "lmtemplate"  # a checkpoint's own record of its step, metric, mode and score


@dataclass
class Saved:
    """A checkpoint as its record describes it (one written before records: its global step, no score)."""

    path: Path
    step: int
    score: Optional[float] = None
    mode: str = "min"


def saved(path: Path) -> Saved:
    """The record of a checkpoint file, or of a sharded checkpoint folder (its meta.pt)."""
    folder = path.is_dir()
    checkpoint = read_checkpoint(path / "meta.pt" if folder else path, mmap=not folder, lightning=not folder)
    record = checkpoint.get(RECORD, {})
    score = record.get("score")
    return Saved(path, record.get("step", checkpoint.get("global_step", 0)),
                 None if score is None or math.isnan(score) else score, record.get("mode", "min"))


def newest(found: list[Saved]) -> Saved:
    return max(found, key=lambda s: s.step)


def best_of(found: list[Saved]) -> Saved:
    """The best score by its mode (the later step of equal scores); by step where files have no score."""
    scored = [s for s in found if s.score is not None]
    if not scored:
        return newest(found)
    sign = -1 if scored[0].mode == "max" else 1
    return min(scored, key=lambda s: (sign * s.score, -s.step))


class LastAndBest(ModelCheckpoint):
    """The best checkpoint by the task's monitored metric, and a ``last.ckpt`` that is always current.

    Lightning's ``save_last`` rewrites last.ckpt only when a best checkpoint is saved at the same step,
    so after a validation that does not improve, or when training ends between validations, last.ckpt
    would lag behind the run; this saves it after every validation and where training stops too.

    Where training stops, the loop state saved must be the one an uninterrupted run has there, or the
    resumed run takes another path. A stop mid-epoch (max_steps, or ``should_stop``, which max_time sets)
    is saved at the batch end, where the loops say "mid-epoch, k batches done", as for Lightning's own
    every-n-steps checkpoints: by ``on_train_end`` Lightning has closed the epoch, and a checkpoint saved
    there resumes in a new epoch, with a new shuffle. A step that validates is saved after validation
    (Lightning resumes from that without validating again); a stop at an epoch's end in ``on_train_end``.
    """

    def __init__(self, dirpath: Path, monitor: str, mode: str):
        super().__init__(
            dirpath=dirpath, filename="best-{step}", monitor=monitor, mode=mode,
            save_last=True, save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False,
        )
        self.validated_at = -1  # the global step of the last validation during fit

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing: which checkpoints exist is read from the folder when training starts (``_adopt_folder``), not
        from paths saved in the checkpoint, which go stale when a run is moved or killed between two saves."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        """Save with a record of the step and the score (the latest validation's ``monitor``), by which
        ``--ckpt last|best`` and a resumed run choose among files, whatever their names. Only last.ckpt, the one
        a run resumes from, holds the optimizer, schedule, loops and callbacks; a best file holds the weights
        alone (with AdamW, a third of the size)."""
        weights_only = filepath != self.last_model_path
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only)
        if weights_only:  # what callbacks add to the weights (EMA: the average beside the trained weights)
            call._call_callbacks_on_save_checkpoint(trainer, checkpoint)
        score = trainer.callback_metrics.get(self.monitor)
        checkpoint[RECORD] = {"step": trainer.global_step, "metric": self.monitor, "mode": self.mode,
                              "score": None if score is None else float(score)}
        trainer.strategy.save_checkpoint(checkpoint, filepath)
        trainer.strategy.barrier("LastAndBest._save_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _adopt_folder(self, trainer) -> None:
        """Continue from the checkpoints the folder holds: the best of its best files by their stored scores is
        the best so far, and the others go, as save_top_k=1 keeps one (a kill between saving a new best and
        last.ckpt leaves a best that the resumed state never heard of)."""
        found = sorted(Path(self.dirpath).glob("best*.ckpt")) if self.dirpath else []
        if not found:
            return
        best = best_of([saved(p) for p in found])
        for path in found:
            if path != best.path:
                trainer.strategy.remove_checkpoint(path)
        worst = float("inf") if self.mode == "min" else float("-inf")  # a file without a score: the next best replaces it
        score = torch.tensor(best.score if best.score is not None else worst)
        self.best_model_path = self.kth_best_model_path = str(best.path)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(best.path): score}

    def on_train_start(self, trainer, pl_module) -> None:
        """Resuming from a validation that only the stop asked for (``should_stop``): count its step, as Lightning does not.

        Lightning resumes a checkpoint saved after validation by skipping that validation again, which counts the
        step for the loggers; at a step that does not validate in the resumed run, the count, and every step logged
        after it, would fall one behind.
        """
        super().on_train_start(trainer, pl_module)
        self._adopt_folder(trainer)
        loop = trainer.fit_loop.epoch_loop
        mid_epoch = loop.batch_progress.current.ready > 0
        if loop.restarted_on_last and mid_epoch and not loop._should_check_val_fx(trainer.fit_loop._data_fetcher):
            loop._batches_that_stepped += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        fit_loop = trainer.fit_loop
        loop = fit_loop.epoch_loop
        if loop._should_accumulate() or loop._num_ready_batches_reached():
            return  # not the end of a step, or the end of an epoch (saved in on_train_end)
        stops = _is_max_limit_reached(trainer.global_step, fit_loop.max_steps) or trainer.should_stop
        if stops and not loop._should_check_val_fx(fit_loop._data_fetcher):
            self._save_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self.validated_at = trainer.global_step
        self._save_last(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        """Training stopped at the end of an epoch (unless last.ckpt is saved already): save it as the next epoch's start.

        Lightning has closed the epoch; its batch counters still count the finished epoch's batches until the next
        epoch resets them, which a resumed run would take for batches of that next epoch.
        """
        loop = trainer.fit_loop.epoch_loop
        if loop._num_ready_batches_reached():
            loop.reset()  # what the next epoch's start does: 0 batches done
        self._save_last(trainer)

    def _save_last(self, trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # skips if this step is saved already
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class RandomState(L.Callback):
    """The random generators (torch's, this process's CUDA device's, numpy's, Python's) in checkpoints, restored on resume.

    Lightning saves none of them, so a resumed run with dropout would draw other masks than an uninterrupted one.
    They are restored when training starts, not on load: the making of the train loader's iterator (which draws a
    seed from torch's generator) comes before, and an uninterrupted run did not make one at the point where it saved
    (evaluation loaders draw from generators of their own). Except at an epoch's start: there it makes the iterator
    after saving, so the resumed run makes it again, from the restored state. Kept as tensors and plain values, for
    ``weights_only`` loads.
    """

    def __init__(self) -> None:
        self._resumed: dict | None = None

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self._resumed = state

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._resumed = self._resumed, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
        if trainer.fit_loop.epoch_loop.batch_progress.current.ready == 0:  # resuming at an epoch's start
            iter(trainer.fit_loop._data_fetcher)


def _what_is_wrong(path: Path, error: Exception) -> str:
    if isinstance(error, pickle.UnpicklingError) and "GLOBAL" in str(error):
        return (f"it holds something that torch.load(weights_only=True) refuses to rebuild, as loading it could run "
                f"code ({_refusal(str(error))}); lmtemplate writes checkpoints of tensors, numbers, strings and plain "
                "containers only: save hyperparameters as dataclasses.asdict(cfg), or allow a type you trust with "
                "torch.serialization.add_safe_globals")
    if path.stat().st_size == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # PyTorch checkpoints are zip archives
    if is_zip and not zipfile.is_zipfile(path):
        return "the file is truncated or corrupted (a save or a copy that did not finish?)"
    return "not a PyTorch checkpoint file"


def _refusal(message: str) -> str:
    """The line of the weights-only unpickler's message that names the refused GLOBAL (torch words it
    differently from version to version and for a class or a blocked module), without its general advice."""
    said = next(line for line in message.splitlines() if "GLOBAL" in line)
    return said.split("WeightsUnpickler error:")[-1].strip().rstrip(".")


def init_source(init_from: str) -> tuple[Path, Optional[Path]]:
    """``model.init_from`` -> (checkpoint file, its run directory): a run directory means its last.ckpt."""
    path = Path(init_from)
    if path.is_dir() and path.suffix != ".ckpt":
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"model.init_from: no checkpoint file at {path} (give a run directory, a .ckpt file "
                          "or a Hugging Face model folder with a config.json)")
    return path, path.parent.parent if path.parent.name == "checkpoints" else None
