"""SST-2 from scratch on a CPU: masked-LM pretraining on the training sentences, then fine-tuning.

1. Pretrain: configs/pretrain/sst2-mlm.yaml on SST-2's 67,349 training
   sentences (labels unused), written as JSONL so each sentence is one
   [SEP]-separated document.
2. Fine-tune: configs/finetune/sst2.yaml with model.init_from = the pretraining run.
3. Baseline: the same fine-tuning with no pretraining (a tokenizer of the same
   size trained on the same sentences, random weights).

Reports dev accuracy (872 sentences) at the end of each fine-tuning run and
the best over its validations, wall times, and writes
outputs/benchmarks/sst2.json.

    python benchmarks/sst2.py [--pretrain-steps 5000] [--finetune-steps 4000] [--quick] [--out PATH]

Needs ../shared/data/sst2/{train,dev}.tsv (or --data FOLDER).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, default_out, environment, print_table, write_json

from lmtemplate import run

PRETRAIN = ROOT / "configs" / "pretrain" / "sst2-mlm.yaml"
FINETUNE = ROOT / "configs" / "finetune" / "sst2.yaml"


def sentences_as_jsonl(train_tsv: Path, out: Path) -> int:
    """SST-2's training sentences, one JSON record each; returns how many."""
    lines = train_tsv.read_text(encoding="utf-8").splitlines()[1:]
    out.write_text("".join(json.dumps({"text": line.split("\t")[0].strip()}) + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def train(config: Path, overrides: list[str]) -> tuple[dict, Path, float]:
    t0 = time.perf_counter()
    session = run.prepare("fit", [str(config)], ["trainer.enable_progress_bar=false", *overrides])
    metrics = run.fit(session)
    return metrics, session.run_dir, time.perf_counter() - t0


def best_accuracy(run_dir: Path) -> float:
    """The best dev accuracy over the run's validations (from its TensorBoard events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(run_dir.glob("events.out.tfevents.*"))), size_guidance={"scalars": 0})
    events.Reload()
    return max(e.value for e in events.Scalars("val/accuracy"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    p.add_argument("--pretrain-steps", type=int, default=5000)
    p.add_argument("--finetune-steps", type=int, default=4000)
    p.add_argument("--quick", action="store_true", help="30 pretraining and 30 fine-tuning steps on 2,000 sentences")
    p.add_argument("--out", default=str(default_out("sst2")))
    args = p.parse_args()
    data = Path(args.data)
    if not (data / "train.tsv").is_file() or not (data / "dev.tsv").is_file():
        sys.exit(f"sst2: {data}/train.tsv and dev.tsv not found; pass --data FOLDER")
    pre_steps, fine_steps = (30, 30) if args.quick else (args.pretrain_steps, args.finetune_steps)
    with tempfile.TemporaryDirectory() as tmp:
        train_tsv = data / "train.tsv"
        if args.quick:
            train_tsv = Path(tmp) / "train.tsv"
            train_tsv.write_text("".join((data / "train.tsv").read_text(encoding="utf-8").splitlines(True)[:2001]))
        corpus = Path(tmp) / "sentences.jsonl"
        n = sentences_as_jsonl(train_tsv, corpus)
        common = [f"run.root={tmp}", f"run.cache_dir={tmp}/cache"]
        interval = min(1000, pre_steps)
        _, pre_dir, pre_s = train(PRETRAIN, [*common, f"data.train={corpus}", f"trainer.max_steps={pre_steps}",
                                             f"trainer.val_check_interval={interval}"])
        pre_metrics = json.loads((pre_dir / "metrics.json").read_text())
        fine = [*common, f"data.train={train_tsv}", f"data.val={data / 'dev.tsv'}", f"trainer.max_steps={fine_steps}",
                f"trainer.val_check_interval={min(500, fine_steps)}"]
        results = {}
        for name, extra in (("pretrained", [f"model.init_from={pre_dir}"]), ("from scratch", [])):
            metrics, run_dir, seconds = train(FINETUNE, [*fine, f"run.name=sst2-{name.replace(' ', '-')}", *extra])
            results[name] = {"dev_accuracy_final": metrics["val/accuracy"], "dev_accuracy_best": best_accuracy(run_dir),
                             "dev_f1_final": metrics["val/f1"], "steps": metrics["step"], "wall_s": seconds}
    result = {
        "quick": args.quick,
        "train_sentences": n,
        "pretraining": {"config": str(PRETRAIN.relative_to(ROOT)), "steps": pre_metrics["step"], "wall_s": pre_s,
                        "val_masked_accuracy": pre_metrics.get("val/accuracy"), "val_loss": pre_metrics.get("val/loss")},
        "finetuning": {"config": str(FINETUNE.relative_to(ROOT)), **results},
        "pretrain_plus_finetune_wall_s": pre_s + results["pretrained"]["wall_s"],
        "target": {"dev_accuracy": 0.80, "wall_minutes": 30},
        "environment": environment(),
    }
    print(f"pretraining: {pre_metrics['step']} steps in {pre_s / 60:.1f} min, "
          f"masked-token accuracy {pre_metrics.get('val/accuracy', float('nan')):.3f}")
    print_table([[k, v["dev_accuracy_final"], v["dev_accuracy_best"], v["steps"], v["wall_s"] / 60] for k, v in results.items()],
                ["fine-tuning", "dev accuracy (end)", "dev accuracy (best validation)", "steps", "minutes"])
    print(f"pretraining + fine-tuning: {result['pretrain_plus_finetune_wall_s'] / 60:.1f} min (budget 30)")
    print(f"written to {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
