"""SQuAD v1.1 on a CPU: masked-LM pretraining on the training articles, then QA fine-tuning.

Only the official dev set is at hand (../shared/data/squad/dev-v1.1.json, 48
articles), so it is split by article, deterministically: the first 38 articles
(8,582 questions) train, the last 10 (1,988 questions) are held out. No
article's questions are on both sides.

1. Pretrain: configs/pretrain/squad-mlm.yaml on the training articles'
   paragraphs (one document each).
2. Fine-tune: configs/finetune/squad.yaml with model.init_from = the pretraining run.
3. Report EM / F1 on the held-out articles, next to
   - the oracle: gold spans through our tokenizer, windows and post-processing
     (the ceiling tokenization leaves), and
   - the trivial baseline: the first k words of the context's first sentence,
     k chosen on the training articles.

    python benchmarks/squad.py [--pretrain-steps N] [--finetune-steps N] [--quick] [--out PATH]

Writes outputs/benchmarks/squad.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, default_out, environment, print_table, write_json

from lmtemplate import run
from lmtemplate.data.squad import read_squad, squad_version
from lmtemplate.tasks.qa_postprocess import oracle
from lmtemplate.tasks.squad_metric import squad_scores

PRETRAIN = ROOT / "configs" / "pretrain" / "squad-mlm.yaml"
FINETUNE = ROOT / "configs" / "finetune" / "squad.yaml"
TRAIN_ARTICLES = 38


def split(dev: Path, folder: Path, quick: bool) -> tuple[Path, Path, Path]:
    """train.json (first 38 articles), eval.json (the rest), and the training paragraphs as JSONL."""
    data = json.loads(dev.read_text(encoding="utf-8"))
    train, held_out = data["data"][:TRAIN_ARTICLES], data["data"][TRAIN_ARTICLES:]
    paragraphs = [p["context"] for a in train for p in a["paragraphs"]]
    if quick:  # QA on a few paragraphs; pretraining still sees them all (it needs a validation share)
        train, held_out = [_first(train[0], 6)], [_first(held_out[0], 3)]
    paths = folder / "train.json", folder / "eval.json", folder / "paragraphs.jsonl"
    for path, articles in zip(paths, (train, held_out)):
        path.write_text(json.dumps({"version": data["version"], "data": articles}), encoding="utf-8")
    paths[2].write_text("".join(json.dumps({"text": c}) + "\n" for c in paragraphs), encoding="utf-8")
    return paths


def _first(article: dict, n: int) -> dict:
    return {**article, "paragraphs": article["paragraphs"][:n]}


def first_words(context: str, k: int) -> str:
    sentence = re.split(r"(?<=[.!?])\s", context, maxsplit=1)[0]
    return " ".join(sentence.split()[:k])


def baseline(examples, k: int, version: str = "1.1") -> dict[str, float]:
    golds = {e.id: [t for t, _ in e.answers] for e in examples}
    return squad_scores({e.id: first_words(e.context, k) for e in examples}, golds, version)


def train(config: Path, overrides: list[str]):
    t0 = time.perf_counter()
    session = run.prepare("fit", [str(config)], ["trainer.enable_progress_bar=false", *overrides])
    metrics = run.fit(session)
    return metrics, session, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"))
    p.add_argument("--pretrain-steps", type=int, default=1100)
    p.add_argument("--finetune-steps", type=int, default=1400)
    p.add_argument("--pretrain-minutes", type=float, default=13, help="pretraining stops here if its steps take longer")
    p.add_argument("--finetune-minutes", type=float, default=24, help="fine-tuning stops here (then validates)")
    p.add_argument("--quick", action="store_true", help="a few steps on a few paragraphs")
    p.add_argument("--out", default=str(default_out("squad")))
    args = p.parse_args()
    dev = Path(args.data)
    if not dev.is_file():
        sys.exit(f"squad: {dev} not found; pass --data FILE")
    pre_steps, fine_steps = (4, 4) if args.quick else (args.pretrain_steps, args.finetune_steps)
    with tempfile.TemporaryDirectory() as tmp:
        train_json, eval_json, paragraphs = split(dev, Path(tmp), args.quick)
        train_examples, eval_examples = read_squad(train_json), read_squad(eval_json)
        common = [f"run.root={tmp}", f"run.cache_dir={tmp}/cache"]
        small = ["trainer.limit_val_batches=2", "data.batch_size=4"] if args.quick else []
        _, pre, pre_s = train(PRETRAIN, [*common, *small, f"data.train={paragraphs}", f"trainer.max_steps={pre_steps}",
                                         f"trainer.val_check_interval={min(500, pre_steps)}",
                                         f"trainer.max_time={{'minutes': {args.pretrain_minutes}}}"])
        pre_metrics = json.loads((pre.run_dir / "metrics.json").read_text())
        metrics, fine, fine_s = train(FINETUNE, [
            *common, *small, f"data.train={train_json}", f"data.val={eval_json}", f"model.init_from={pre.run_dir}",
            f"trainer.max_steps={fine_steps}", f"trainer.val_check_interval={min(500, fine_steps)}",
            f"trainer.max_time={{'minutes': {args.finetune_minutes}}}",
            *(["trainer.limit_val_batches=1.0"] if args.quick else []),
        ])
        version = squad_version(eval_json, eval_examples)  # the official script of the data's version scores all rows
        ceiling = squad_scores(oracle(eval_examples, fine.datamodule.examples["val"]),
                               {e.id: [t for t, _ in e.answers] for e in eval_examples}, version)
    k = max(range(1, 11), key=lambda k: baseline(train_examples, k, version)["f1"])
    trivial = baseline(eval_examples, k, version)
    rows = {
        "learned (pretrained + fine-tuned)": {"exact": metrics["val/exact"], "f1": metrics["val/f1"]},
        f"first {k} words of the first sentence": trivial,
        "oracle (gold spans through our tokenization)": ceiling,
    }
    result = {
        "quick": args.quick,
        "split": {"train_articles": f"first {TRAIN_ARTICLES}", "eval_articles": "the rest",
                  "train_questions": len(train_examples), "eval_questions": len(eval_examples)},
        "pretraining": {"config": str(PRETRAIN.relative_to(ROOT)), "steps": pre_metrics["step"], "wall_s": pre_s,
                        "val_masked_accuracy": pre_metrics.get("val/accuracy")},
        "finetuning": {"config": str(FINETUNE.relative_to(ROOT)), "steps": metrics["step"], "wall_s": fine_s},
        "eval": rows,
        "baseline_words": k,
        "pretrain_plus_finetune_wall_s": pre_s + fine_s,
        "budget_minutes": 40,
        "environment": environment(),
    }
    print(f"pretraining: {pre_metrics['step']} steps in {pre_s / 60:.1f} min, masked-token accuracy "
          f"{pre_metrics.get('val/accuracy', float('nan')):.3f}; fine-tuning: {metrics['step']} steps in {fine_s / 60:.1f} min")
    print_table([[name, r["exact"], r["f1"]] for name, r in rows.items()],
                [f"held-out articles ({len(eval_examples)} questions)", "EM", "F1"])
    print(f"pretraining + fine-tuning: {(pre_s + fine_s) / 60:.1f} min (budget 40)")
    print(f"written to {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
