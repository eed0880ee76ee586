"""DialogSum on a CPU: train within a wall-time budget, then test ROUGE beside an extractive baseline chosen on dev.

1. Fit configs/finetune/dialogsum.yaml (or --arch decoder: dialogsum-decoder.yaml)
   with trainer.max_time = --minutes; each validation decodes the dev dialogues
   greedily (validation ROUGE; the best checkpoint by ROUGE-L).
2. Summarize the 500 test dialogues with the best checkpoint, with beam search
   (the config's decode section) and greedily, and score ROUGE-1/2/L/Lsum
   (rouge-score's, stemming on) against summary1 (as the dataset's baseline table scores BART-large:
   45.95 / 21.36 / 38.72) and against all three references (the best per key).
3. The baseline: the first k words of the dialogue with the #PersonN#: tags
   removed, k chosen on dev by ROUGE-1 (45: test 22.46 / 7.47 / 17.03 against
   summary1, as the issue measured with rouge-score), scored on test the same two ways.

Each test decoding also reports its share of distinct summaries and its repeated-trigram rate (``Diversity``):
a collapsed model writes few distinct summaries. --train-dialogues N trains on the first N training dialogues
only (a small corpus). Reports these, the learning curve (validation ROUGE against minutes of
training), steps and wall times, and writes outputs/benchmarks/dialogsum.json
(--out) and, with matplotlib, the learning curve's chart beside it (.png).
The full run keeps its run directory (outputs/dialogsum-benchmark/version_<n>);
--quick runs a tiny model for 20 steps on 400 training and 40 dev / test
dialogues in a temporary folder.

    python benchmarks/dialogsum.py [--minutes 60] [--arch encoder_decoder|decoder] [--init-from RUN] [--quick] [KEY=VALUE ...]
    python benchmarks/dialogsum.py --config configs/finetune/dialogsum-minilm.yaml    # another recipe (here: MiniLM's encoder)
    python benchmarks/dialogsum.py --config configs/finetune/dialogsum-minilm-warm.yaml --minutes 15 --train-dialogues 2000
    python benchmarks/dialogsum.py --ckpt RUN/checkpoints/best-N.ckpt     # step 2 and 3 only, for an earlier run
    python benchmarks/dialogsum.py --plot-only A.json [B.json ...] --chart docs/images/dialogsum.png

Needs ../shared/data/dialogsum/{train,dev,test}.jsonl (or --data FOLDER).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from common import (ROOT, default_out, environment, head, learning_curve, max_time, plot_learning_curves, print_table,
                    write_json)

from lmtemplate import run
from lmtemplate.tasks.decoding import Diversity
from lmtemplate.tasks.rouge import KEYS, ROUGE

CONFIGS = {"encoder_decoder": ROOT / "configs" / "finetune" / "dialogsum.yaml",
           "decoder": ROOT / "configs" / "finetune" / "dialogsum-decoder.yaml"}
FILES = {"train": "train.jsonl", "val": "dev.jsonl", "test": "test.jsonl"}
QUICK_LINES = {"train": 400, "val": 40, "test": 40}
QUICK = ["model.n_embd=64", "model.n_layer=1", "model.n_decoder_layer=1", "model.block_size=192",
         "data.max_target_tokens=32", "tokenizer.vocab_size=1000", "trainer.max_steps=20", "trainer.max_time=null",
         "trainer.val_check_interval=10", "decode.val_sentences=40", "decode.max_len_b=24", "decode.beam_size=2"]
REFERENCES = ("summary1", "summary2", "summary3")
TAG = re.compile(r"#Person\d+#:")
LEAD_WORDS = range(5, 101, 5)  # the baseline's k, chosen on dev


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def lead(dialogue: str, k: int) -> str:
    """The extractive baseline: the dialogue's first ``k`` words, speaker tags removed."""
    return " ".join(TAG.sub(" ", dialogue).split()[:k])


def rouge(summaries: list[str], references: list[list[str]]) -> dict[str, float]:
    metric = ROUGE(stem=True)
    metric.update(summaries, references)
    return {key: value.item() for key, value in metric.compute().items()}


def diversity(summaries: list[str]) -> dict[str, float]:
    metric = Diversity()
    metric.update(summaries)
    return {key: value.item() for key, value in metric.compute().items()}


def both_ways(summaries: list[str], test: list[dict]) -> dict[str, dict[str, float]]:
    """Test ROUGE against summary1 alone and against all three references."""
    return {"summary1": rouge(summaries, [[row["summary1"]] for row in test]),
            "all three": rouge(summaries, [[row[r] for r in REFERENCES] for row in test])}


def baseline(dev: list[dict], test: list[dict]) -> dict:
    """Lead-k with k chosen by dev ROUGE-1 (the benchmark's target score), scored on test."""
    by_k = {k: rouge([lead(row["dialogue"], k) for row in dev], [[row["summary"]] for row in dev])["rouge1"]
            for k in LEAD_WORDS}
    k = max(by_k, key=by_k.get)
    return {"k": k, "dev_rouge1_by_k": by_k, "test": both_ways([lead(row["dialogue"], k) for row in test], test)}


def label(result: dict) -> str:
    return result["arch"] + (f", from {result['init_from']}" if result.get("init_from") else ", from scratch")


def plot(results: list[dict], path: Path) -> Path | None:
    """Validation ROUGE-L (greedy, dev) against minutes of training, one line per result."""
    return plot_learning_curves({label(r): r["learning_curve"] for r in results}, "val_rougeL", "dev ROUGE-L (greedy)",
                                f"DialogSum, {results[0]['environment']['processor']}", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dialogsum"))
    p.add_argument("--minutes", type=float, default=60.0, help="training wall-time budget (validations included)")
    p.add_argument("--arch", choices=list(CONFIGS), default="encoder_decoder")
    p.add_argument("--config", help="the recipe (default: dialogsum.yaml, or dialogsum-decoder.yaml for --arch decoder)")
    p.add_argument("--init-from", help="model.init_from: a masked_lm run (encoder_decoder) or causal_lm run (decoder)")
    p.add_argument("--ckpt", help="no training: test this checkpoint of an earlier run (its config's shape)")
    p.add_argument("--train-dialogues", type=int, help="train on the first N training dialogues only")
    p.add_argument("--quick", action="store_true", help="a smoke run: 20 steps of a tiny model on 400 dialogues")
    p.add_argument("--out", default=str(default_out("dialogsum")))
    p.add_argument("--chart", help="where the learning-curve chart goes (default: --out with .png)")
    p.add_argument("--plot-only", nargs="+", metavar="JSON", help="only draw the learning curves of earlier results")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, applied last")
    args = p.parse_args()
    missing = [f for f in [args.ckpt, args.config, *(args.plot_only or [])] if f and not Path(f).is_file()]
    if missing:
        sys.exit(f"dialogsum: no such file: {', '.join(missing)} "
                 "(--ckpt names a checkpoint, --config a YAML, --plot-only result JSONs)")
    if args.plot_only:
        results = [json.loads(Path(f).read_text()) for f in args.plot_only]
        sys.exit(0 if plot(results, Path(args.chart or Path(args.plot_only[0]).with_suffix(".png"))) else 1)
    data, config = Path(args.data), args.config or str(CONFIGS[args.arch])
    missing = [name for name in FILES.values() if not (data / name).is_file()]
    if missing:
        sys.exit(f"dialogsum: {', '.join(missing)} not found in {data}; pass --data FOLDER")
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick or args.train_dialogues:
            for split, name in FILES.items():
                lines = QUICK_LINES[split] if args.quick else args.train_dialogues if split == "train" else None
                head(data / name, Path(tmp) / name, lines)
            data = Path(tmp)
        where = [f"run.root={tmp}", f"run.cache_dir={tmp}/cache"] if args.quick else ["run.name=dialogsum-benchmark"]
        overrides = [*where, "trainer.enable_progress_bar=false",
                     *(f"data.{split}={data / name}" for split, name in FILES.items())]
        overrides += [f"model.init_from={args.init_from}"] if args.init_from else []
        overrides += QUICK if args.quick else [f"trainer.max_time={max_time(args.minutes)}"]
        overrides += args.overrides
        session = run.prepare("test" if args.ckpt else "fit", [config], overrides, ckpt=args.ckpt)
        if args.ckpt:
            metrics, fit_s, curve, best = {"step": session.step}, None, [], args.ckpt
        else:
            start = time.time()
            metrics = run.fit(session)
            fit_s = time.time() - start
            tags = {f"val_{key}": f"val/{key}" for key in ("rougeL", "rouge1", "rouge2")}
            curve = learning_curve(session.run_dir, start, tags)
            best = str(run.checkpoint_of(session.run_dir, "best"))
        test_rows, dev_rows = read_jsonl(data / FILES["test"]), read_jsonl(data / FILES["val"])
        test, summaries = {}, {}
        beam = session.loaded.cfg.decode.beam_size
        for name, decode in ((f"beam {beam}", []), ("greedy", ["decode.beam_size=1"])):
            t0 = time.perf_counter()
            predicted, _ = run.predict(run.prepare("predict", [config], [*overrides, *decode], ckpt=best),
                                       [row["dialogue"] for row in test_rows], "--input", Path(tmp) / "summaries.txt")
            summaries[name] = [row["summary"] for row in sorted(predicted, key=lambda r: r["index"])]
            test[name] = {**both_ways(summaries[name], test_rows), **diversity(summaries[name]),
                          "wall_s": time.perf_counter() - t0}
        lead_k = baseline(dev_rows, test_rows)
        train_examples = len(session.datamodule.examples["train"])
    result = {
        "quick": args.quick,
        "arch": session.loaded.cfg.model.arch,
        "init_from": session.loaded.cfg.model.init_from,
        "config": os.path.relpath(config, ROOT),
        "overrides": overrides,
        "train_examples": train_examples,
        "train_dialogues": args.train_dialogues,
        "steps": metrics["step"],
        "fit_wall_s": fit_s,
        "best_checkpoint": best if not args.quick else None,
        "final_val": {key: metrics.get(f"val/{key}") for key in KEYS},
        "test": test,
        "baseline": lead_k,
        "samples": [{"dialogue": r["dialogue"], "summary1": r["summary1"], **{name: s[i] for name, s in summaries.items()}}
                    for i, r in enumerate(test_rows[:3])],
        "learning_curve": curve,
        "target": {"test_rouge1_summary1": 30.0, "above_baseline": True, "wall_minutes": 60},
        "environment": environment(),
    }
    print_table([[c["minutes"], c["step"], c["val_rougeL"], c["val_rouge1"], c["val_rouge2"]] for c in curve],
                ["minutes", "step", "val ROUGE-L (greedy)", "val ROUGE-1", "val ROUGE-2"])
    rows = [[f"{name} vs {refs}", *(scores[key] for key in KEYS)]
            for name, scores_by_refs in (*((f"model, {k}", v) for k, v in test.items()), (f"lead-{lead_k['k']}", lead_k["test"]))
            for refs, scores in scores_by_refs.items() if refs in ("summary1", "all three")]
    print_table(rows, ["test", *KEYS])
    budget = "20 steps (--quick)" if args.quick else f"budget {args.minutes:g} min"
    trained = f"the checkpoint {best}" if args.ckpt else f"{metrics['step']} steps in {fit_s / 60:.1f} min ({budget})"
    for name, scores in test.items():
        print(f"{name}: {scores['distinct']:.1%} of the test summaries distinct, {scores['repeated_trigrams']:.1%} of "
              "their trigrams repeated")
    print(f"training: {trained}; target: test ROUGE-1 >= 30 against summary1, above the baseline on every ROUGE")
    print(f"written to {write_json(args.out, result)}")
    chart = plot([result], Path(args.chart) if args.chart else Path(args.out).with_suffix(".png")) if curve else None
    if chart:
        print(f"chart: {chart}")


if __name__ == "__main__":
    main()
