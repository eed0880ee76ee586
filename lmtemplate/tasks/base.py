"""The contract between a task and the rest of lmtemplate (``Task``), and what tasks share: AdamW with its schedule,
gradient clipping that works under FSDP, the pretrained backbone of ``model.init_from``."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch.strategies import FSDPStrategy
import torch.nn.functional as F
from torch import nn

from lmtemplate.callbacks.averaging import weights_for
from lmtemplate.callbacks.console import synced_elsewhere
from lmtemplate.config import ConfigError, read_utf8
from lmtemplate.data.base import IGNORE
from lmtemplate.models.backbone import load_backbone, load_pretrained, write_load_report
from lmtemplate.models.gpt import GPT, Block
from lmtemplate.models.lora import add_adapters
from lmtemplate.models.seq2seq import Seq2Seq

log = logging.getLogger(__name__)

SCHEDULES = ("cosine", "linear", "inverse_sqrt")


@dataclass
class OptimConfig:
    lr: float = 2e-3
    min_lr: float = 1e-4  # the cosine decay ends here
    weight_decay: float = 0.1  # on weight matrices only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 50
    decay_steps: Optional[int] = None  # end of the cosine decay; None: trainer.max_steps
    schedule: str = "cosine"  # after the warmup: cosine or linear (decay to min_lr), or inverse_sqrt (lr * sqrt(warmup / step))
    fused: Optional[bool] = None  # torch's fused AdamW kernel; None: wherever torch has it (parameters on CPU or CUDA)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr: expected a positive learning rate, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule: '{self.schedule}' is not one of {', '.join(SCHEDULES)}")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas: expected two numbers, got {self.betas}")
        if self.min_lr > self.lr:
            raise ConfigError(f"optim.min_lr ({self.min_lr}) is larger than optim.lr ({self.lr})")


def warmup_decay(step: int, cfg: OptimConfig, decay_steps: int) -> float:
    """The learning rate at ``step``: linear warmup, cosine (or linear) decay to ``min_lr`` at ``decay_steps``, then flat."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= decay_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps)
    left = 1 - progress if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.min_lr + left * (cfg.lr - cfg.min_lr)


def inverse_sqrt(step: int, cfg: OptimConfig) -> float:
    """The Transformer's schedule: linear warmup to ``lr``, then decay as 1 / sqrt(step) (no end, no min_lr)."""
    warmup = max(1, cfg.warmup_steps)
    return cfg.lr * min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))


def use_fused(param_groups: list[dict], fused: Optional[bool] = None) -> bool:
    """Whether AdamW runs fused: ``fused`` if set, else where torch has the kernel (floating parameters on CPU or CUDA).

    Torch defaults to a loop over the parameters on CPU; its fused kernel there made a baby-GPT step ~5% faster
    (benchmarks/vs_nanogpt.py; same updates up to float rounding).
    """
    if fused is not None:
        return fused
    params = [p for g in param_groups for p in g["params"]]
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


def configure_adamw(module: L.LightningModule, param_groups: list[dict], cfg: OptimConfig):
    """AdamW over ``param_groups`` with warmup and ``cfg.schedule``, stepped every optimizer step."""
    decay_steps = cfg.decay_steps or module.trainer.max_steps
    if cfg.schedule != "inverse_sqrt" and (decay_steps is None or decay_steps < 0):
        if math.isinf(module.trainer.estimated_stepping_batches):
            raise ConfigError(f"optim.decay_steps: the {cfg.schedule} schedule needs an end; set trainer.max_steps or "
                              "optim.decay_steps, or use optim.schedule=inverse_sqrt (a time budget has no step count)")
        decay_steps = int(module.trainer.estimated_stepping_batches)
    param_groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in param_groups]  # no frozen one
    param_groups = [g for g in param_groups if g["params"]]
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=use_fused(param_groups, cfg.fused))
    rate = (lambda step: inverse_sqrt(step, cfg)) if cfg.schedule == "inverse_sqrt" else (lambda step: warmup_decay(step, cfg, decay_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: rate(step) / cfg.lr)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class Task(L.LightningModule):
    """The base of every task: each hook that ``run.py``, the callbacks and the verbs call, with its default.

    The registry builds a task as ``Task(cfg, datamodule)``; ``cfg`` holds every config
    section (``cfg.model``, ``cfg.data``, ...) as dataclasses. A task writes ``loss``, and
    ``evaluate`` / ``pass_scores`` for metrics beyond the loss; the rest is optional.
    """

    metrics: dict[str, str] = {"val/loss": "min"}  # what best.metric may name -> "min" or "max"; the first is the default
    blocks: tuple[type, ...] = ()  # the module classes FSDP shards (and checkpoints) one at a time
    limit_val_batches: int | float = 1.0  # default trainer.limit_val_batches: a corpus metric needs the whole set
    sample_columns: tuple[str, ...] = ("prompt", "completion")  # the TensorBoard table of text_samples()
    predictions_file: str = "predictions.jsonl"  # predict's output in the run directory, unless --output
    predict_flags: tuple[str, ...] = ("--prompt", "--input")  # the forms of predict's input the task reads
    resuming: bool = False  # set by the run when fit continues from a checkpoint (``setup`` skips model.init_from)

    def __init__(self, cfg, datamodule: Optional[L.LightningDataModule] = None):
        super().__init__()
        self.cfg = cfg
        self.scores: dict[str, float] = {}  # pass_scores of the last evaluation, in float64, for metrics.json
        self.partial: dict[str, str] = {}  # stage -> "k of n batches", when an evaluation pass saw part of its set
        self.step_count: torch.Tensor | int | None = None  # tokens (or examples) of this optimizer step's micro-batches
        if dataclasses.is_dataclass(cfg):
            self.save_hyperparameters(dataclasses.asdict(cfg))

    def __setattr__(self, name: str, value) -> None:
        """With ``lora.rank`` set, the pretrained part of the task's ``self.model = ...`` (``pretrained``) gets
        low-rank adapters (``models/lora.py``) and its frozen weights from ``model.init_from`` as it is assigned, for
        every verb (checkpoints hold only what trains) and every task, plugins too; the rest of what the task builds
        (its head, an encoder-decoder's decoder) trains."""
        if name == "model" and isinstance(value, nn.Module) and self.adapted:
            base = pretrained(value)
            add_adapters(base, self.cfg.lora)
            init_from = getattr(getattr(self.cfg, "model", None), "init_from", None)
            if not init_from or not Path(init_from).exists():
                raise ConfigError(
                    f"lora.rank={self.cfg.lora.rank}: adapters train on a frozen pretrained base, and its checkpoints "
                    f"hold only them and the task's head; model.init_from, the base, "
                    f"{f'is not there: {init_from}' if init_from else 'is not set'}. Set model.init_from to a run "
                    "directory, checkpoint or Hugging Face folder (for a run whose base moved: where it is now)")
            try:
                load_backbone(base, init_from, "decoder" if isinstance(base, GPT) else "encoder")
            except ConfigError as e:
                raise ConfigError(f"{e}. With lora.rank={self.cfg.lora.rank} that base is frozen and a checkpoint "
                                  "holds only the adapters and the task's head: the base must be the one they trained "
                                  "on") from None
        super().__setattr__(name, value)

    @property
    def adapted(self) -> bool:
        """Whether ``self.model`` is a frozen base with adapters (``lora.rank`` set)."""
        return getattr(getattr(getattr(self, "cfg", None), "lora", None), "rank", None) is not None

    def state_dict(self, *args, **kwargs) -> dict:
        """Everything, or with adapters, all but the frozen base: a checkpoint holds what trains, and its
        hyper_parameters name the base (``model.init_from``), which every verb loads as the task sets ``self.model``."""
        state = super().state_dict(*args, **kwargs)
        if self.adapted:
            prefix = kwargs.get("prefix", "")
            for name in self._frozen():
                state.pop(prefix + name, None)
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """With adapters, a checkpoint without the frozen base loads strictly into the rest."""
        if self.adapted:
            own = super().state_dict(keep_vars=True)
            state_dict = {**{name: own[name] for name in self._frozen() if name in own}, **state_dict}
        return super().load_state_dict(state_dict, strict, assign)

    def _frozen(self) -> list[str]:
        return [name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad]

    def loss(self, batch) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The training loss of a batch (also logged as ``{stage}/loss`` in evaluation): a mean over its examples, or,
        for a loss that is a mean over tokens, the pair (its sum over the tokens, the number of tokens)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss(batch)")

    def summed_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor | int]:
        """``loss(batch)`` as (sum, count): a mean over examples counts the batch's examples."""
        loss = self.loss(batch)
        if isinstance(loss, tuple):
            return loss
        n = self.batch_size(batch)
        return loss * n, n

    def mean_loss(self, batch) -> torch.Tensor:
        """``loss(batch)`` as a mean per token (or example)."""
        total, count = self.summed_loss(batch)
        return total / count

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """The loss of one step weighs each token (or example) the same, however the step's tokens fall into the
        accumulated micro-batches and the ranks: a micro-batch returns its sum, and ``on_before_optimizer_step``
        divides the step's gradient by the step's count over them all (docs/runs.md)."""
        total, count = self.summed_loss(batch)
        if self.logs_now():
            self.log_training(total.detach() / count, batch)
        if self.trainer.accumulate_grad_batches * self.trainer.world_size == 1:
            return total / count  # the step is this batch: its mean is the step's
        self.step_count = count if self.step_count is None else self.step_count + count
        return total

    def log_training(self, loss: torch.Tensor, batch) -> None:
        """Log a micro-batch's training loss, its mean per token (or example)."""
        self.log("train/loss", loss, prog_bar=True, batch_size=self.batch_size(batch))

    def on_before_optimizer_step(self, optimizer) -> None:
        """Divide the step's gradient by its tokens over the micro-batches and ranks. Lightning divided each
        micro-batch's loss by ``accumulate_grad_batches`` and DDP (FSDP) averaged the gradient over the ranks; both
        are multiplied back. Before clipping, which then sees the gradient of the per-token mean."""
        if self.step_count is None:  # a training_step of its own, or one batch per step
            return
        count = torch.as_tensor(self.step_count, device=self.device, dtype=torch.float64)
        count = self.trainer.strategy.reduce(count, reduce_op="sum").clamp(min=1)
        scale = (self.trainer.accumulate_grad_batches * self.trainer.world_size / count).float()
        self.step_count = None
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale)

    def logs_now(self) -> bool:
        """Whether the trainer writes this training step's logs (every ``trainer.log_every_n_steps``): a step's
        ``self.log`` costs about 0.5 ms of Python, which steps whose logs nobody writes need not pay."""
        return self.trainer._logger_connector.should_update_logs

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        """One evaluation step, for validate (``stage`` val) and test alike: logs the loss; tasks add metrics."""
        self.log(f"{stage}/loss", self.mean_loss(batch), prog_bar=True, sync_dist=True, batch_size=self.batch_size(batch))

    def log_metrics(self, stage: str, metrics: nn.ModuleDict, *inputs) -> None:
        """Update ``metrics[stage]`` (a torchmetrics MetricCollection, see ``per_stage``) with ``inputs`` and log
        each metric as ``{stage}/<name>``: torchmetrics accumulates over the pass (and across ranks) and logs at its end."""
        metrics[stage].update(*inputs)
        self.log_dict({f"{stage}/{name}": metric for name, metric in metrics[stage].items()}, prog_bar=True)

    def pass_scores(self, stage: str) -> dict[str, float]:
        """Scores over a whole evaluation pass (EM / F1, BLEU), computed at its end, as Python floats: logged as
        ``{stage}/<name>`` and written to metrics.json in full precision. Every rank must return the same."""
        return {}

    def start_pass(self, stage: str) -> None:
        """Before an evaluation pass: reset what ``evaluate`` collects outside torchmetrics."""

    def on_validation_epoch_start(self) -> None:
        self.start_pass("val")

    def on_test_epoch_start(self) -> None:
        self.start_pass("test")

    def validation_step(self, batch, batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        self._end_pass("val")

    def on_test_epoch_end(self) -> None:
        self._end_pass("test")

    def _end_pass(self, stage: str) -> None:
        scores = self.pass_scores(stage)
        for name, value in scores.items():
            synced_elsewhere(f"{stage}/{name}")
            self.log(f"{stage}/{name}", value, prog_bar=True)
        if self._trainer is None or self.trainer.sanity_checking:  # unattached: a test driving the module by hand
            return
        self.scores = {f"{stage}/{name}": float(v) for name, v in scores.items()}
        seen, loaders = (self.trainer.num_val_batches, self.trainer.val_dataloaders) if stage == "val" else (
            self.trainer.num_test_batches, self.trainer.test_dataloaders)
        total = len(loaders)
        self.partial.pop(stage, None)
        if seen[0] < total:
            self.partial[stage] = f"{seen[0]} of {total} batches (trainer.limit_{stage}_batches)"
            log.info("%s: a partial pass, %s", stage, self.partial[stage])

    def batch_size(self, batch) -> int:
        """Examples in a batch: the first dimension of the batch, or of its ``input_ids``."""
        return len(batch["input_ids"] if isinstance(batch, dict) else batch)

    def batch_tokens(self, batch) -> int:
        """Tokens a batch feeds the model, for the throughput callback (padding counts as read)."""
        return (batch["input_ids"] if isinstance(batch, dict) else batch).numel()

    @property
    def flops_per_batch(self) -> Optional[int]:
        """FLOPs of one training batch (forward and backward), for FLOP/s and MFU; None when batches vary."""
        return None

    def text_samples(self) -> list[tuple[str, ...]]:
        """Rows of text (columns ``sample_columns``) logged to TensorBoard after each validation."""
        return []

    def read_predict_inputs(self, path: Path) -> list:
        """``predict --input FILE``: the inputs in the file (default: its lines)."""
        return read_utf8(Path(path)).splitlines()

    def format_predictions(self, rows: list[dict]) -> str:
        """The text of the predictions file (default: one JSON object per line)."""
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """validate, test, predict: an EMA run's trained weights instead of its average if ``ema.averaged_in`` says so."""
        if self.trainer.state.fn != "fit":
            checkpoint["state_dict"] = weights_for(checkpoint, self.trainer.state.fn.value, self.cfg.ema)

    def on_train_start(self) -> None:
        loader = self.trainer.train_dataloader
        if self.trainer.ckpt_path and not isinstance(loader, _Stateful):
            log.warning("%s.train_dataloader() is not resumable (no state_dict / load_state_dict): the resumed run starts "
                        "its epoch from the beginning instead of where the checkpoint stopped; build the loader with "
                        "lmtemplate.data.base.DataModule.loader to resume exactly", type(self.trainer.datamodule).__name__)

    def setup(self, stage: str) -> None:
        """Before training: ``model.init_from``, a pretrained GPT or encoder; an encoder-decoder takes it as its
        encoder (a masked_lm run's). A Hugging Face checkpoint's heads that the task has are loaded too, and what
        was loaded is reported in the log and the run directory's init_from.json. Not when resuming: the checkpoint
        holds the weights, and the run it started from may no longer be where it was. (With adapters, the frozen
        base was loaded when the task set ``self.model``; here it is read again, for the heads and the report.)"""
        init_from = getattr(getattr(self.cfg, "model", None), "init_from", None)
        if stage == "fit" and init_from and not self.resuming:
            report = load_pretrained(self, pretrained(self.model), init_from)
            if self.trainer.is_global_zero:
                write_load_report(report, Path(self.trainer.default_root_dir))

    def configure_optimizers(self):
        """AdamW over the model's parameter groups (no decay on biases and norms), with ``optim``'s schedule."""
        return configure_adamw(self, self.model.param_groups(self.cfg.optim.weight_decay), self.cfg.optim)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by norm as Lightning would, or through FSDP's own ``clip_grad_norm_`` (which Lightning's FSDP
        plugin refuses); the norm before clipping is logged as ``train/grad_norm`` when the trainer logs."""
        if gradient_clip_algorithm == "value":
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        log_now = self.logs_now()
        if not gradient_clip_val and not log_now:
            return
        max_norm = gradient_clip_val or float("inf")
        if isinstance(self.trainer.strategy, FSDPStrategy):
            norm = self.trainer.strategy.model.clip_grad_norm_(max_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_norm)
        if log_now:
            self.log("train/grad_norm", norm)


def pretrained(model: nn.Module) -> nn.Module:
    """The part of a task's model that ``model.init_from`` fills: an encoder-decoder's encoder, else all of it."""
    return model.encoder if isinstance(model, Seq2Seq) else model


class LanguageModel(Task):
    """A pretraining task: the loss is the cross-entropy of the logits (N, vocab) and labels (N) that
    ``scored(batch, generator=None)`` gives (``generator``: for any randomness), logged with perplexity."""

    blocks = (Block,)
    limit_val_batches = 20  # the loss is a mean: a sample of batches estimates it

    @functools.cached_property  # the throughput callback asks every step; counting parameters took ~0.1% of one
    def flops_per_batch(self) -> int:
        return self.model.flops_per_token() * self.cfg.data.batch_size * self.cfg.model.block_size

    def loss(self, batch) -> tuple[torch.Tensor, int]:
        logits, labels = self.scored(batch)
        return F.cross_entropy(logits, labels, reduction="sum"), len(labels)

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        self.log_scores(stage, *self.scored(batch))

    def log_scores(self, stage: str, logits: torch.Tensor, labels: torch.Tensor, batch_size: Optional[int] = None):
        """Log ``{stage}/loss`` (each batch weighs ``batch_size``, by default its sequences) and ``{stage}/ppl``."""
        self.ppl[stage].update(logits.float()[None], labels[None])
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), prog_bar=True, sync_dist=True, batch_size=batch_size)
        self.log(f"{stage}/ppl", self.ppl[stage])


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, ...]:
    """The cross-entropy summed over the labelled tokens (``labels`` is IGNORE elsewhere), and their number: the
    ``loss`` of a task whose loss is a mean over target tokens."""
    labels = labels.flatten()
    total = F.cross_entropy(logits.flatten(0, -2), labels, ignore_index=IGNORE, label_smoothing=label_smoothing,
                            reduction="sum")
    return total, (labels != IGNORE).sum()


def per_stage(metric: nn.Module) -> nn.ModuleDict:
    """A metric (or MetricCollection) for validation and one for test, so the two passes never mix."""
    return nn.ModuleDict({"val": metric, "test": metric.clone()})
