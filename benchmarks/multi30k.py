"""Multi30k English -> German on a CPU: train within a wall-time budget, then test BLEU and chrF, beam 5 and greedy.

1. Fit configs/finetune/multi30k.yaml with trainer.max_time = --minutes; each
   validation decodes all 1,014 validation pairs greedily (validation BLEU).
2. Test the best checkpoint (by validation BLEU) on test_2016_flickr (1,000
   pairs) with beam search (beam 5) and with greedy decoding.

Reports test BLEU and chrF (sacreBLEU's definitions) for both, the learning
curve (validation BLEU against minutes of training), steps and wall times, and
writes outputs/benchmarks/multi30k.json. The full run keeps its run directory
(outputs/multi30k-benchmark/version_<n>) for `predict`; --quick runs in a
temporary folder.

    python benchmarks/multi30k.py [--minutes 55] [--quick] [--data FOLDER] [--out PATH]

Needs ../shared/data/multi30k/{train,val,test_2016_flickr}.{en,de} (or --data FOLDER).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, default_out, environment, head, learning_curve, max_time, print_table, write_json

from lmtemplate import run

CONFIG = ROOT / "configs" / "finetune" / "multi30k.yaml"
SPLITS = ("train", "val", "test_2016_flickr")
# --quick: a small model for 30 steps on the first 2,000 training and 100 validation / test pairs
QUICK = ["model.n_embd=64", "model.n_layer=1", "model.n_decoder_layer=1", "tokenizer.vocab_size=1000",
         "trainer.max_steps=30", "trainer.max_time=null", "trainer.val_check_interval=15", "decode.val_sentences=100"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    p.add_argument("--minutes", type=float, default=55.0, help="training wall-time budget (validations included)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 30 steps of a tiny model on 2,000 pairs")
    p.add_argument("--out", default=str(default_out("multi30k")))
    args = p.parse_args()
    data = Path(args.data)
    missing = [f"{split}.{lang}" for split in SPLITS for lang in ("en", "de") if not (data / f"{split}.{lang}").is_file()]
    if missing:
        sys.exit(f"multi30k: {', '.join(missing)} not found in {data}; pass --data FOLDER")
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            for split, lines in zip(SPLITS, (2000, 100, 100)):
                for lang in ("en", "de"):
                    head(data / f"{split}.{lang}", Path(tmp) / f"{split}.{lang}", lines)
            data = Path(tmp)
        where = [f"run.root={tmp}", f"run.cache_dir={tmp}/cache"] if args.quick else ["run.name=multi30k-benchmark"]
        overrides = [*where, "trainer.enable_progress_bar=false", f"data.train={data}/train", f"data.val={data}/val",
                     f"data.test={data}/test_2016_flickr"]
        overrides += QUICK if args.quick else [f"trainer.max_time={max_time(args.minutes)}"]
        session = run.prepare("fit", [str(CONFIG)], overrides)
        start = time.time()
        metrics = run.fit(session)
        fit_s = time.time() - start
        curve = learning_curve(session.run_dir, start, {"val_bleu": "val/bleu", "val_chrf": "val/chrf"})
        best = run.checkpoint_of(session.run_dir, "best")
        test = {}
        for name, beam in (("beam 5", 5), ("greedy", 1)):
            t0 = time.perf_counter()
            s = run.prepare("test", [str(CONFIG)], [*overrides, f"decode.beam_size={beam}"], ckpt=str(best))
            scores = run.evaluate(s, "test")
            test[name] = {"bleu": scores["test/bleu"], "chrf": scores["test/chrf"], "wall_s": time.perf_counter() - t0}
        train_pairs = len(session.datamodule.examples["train"])
    result = {
        "quick": args.quick,
        "config": str(CONFIG.relative_to(ROOT)),
        "overrides": overrides,
        "train_pairs": train_pairs,
        "steps": metrics["step"],
        "fit_wall_s": fit_s,
        "best_checkpoint": str(best) if not args.quick else None,
        "final_val_bleu": metrics.get("val/bleu"),
        "test_2016_flickr": test,
        "learning_curve": curve,
        "target": {"test_bleu": 25.0, "wall_minutes": 60},
        "environment": environment(),
    }
    print_table([[c["minutes"], c["step"], c["val_bleu"], c["val_chrf"]] for c in curve],
                ["minutes", "step", "val BLEU (greedy)", "val chrF"])
    print_table([[k, v["bleu"], v["chrf"], v["wall_s"]] for k, v in test.items()],
                ["test_2016_flickr", "BLEU", "chrF", "seconds"])
    budget = "30 steps (--quick)" if args.quick else f"budget {args.minutes:g} min"
    print(f"training: {metrics['step']} steps in {fit_s / 60:.1f} min ({budget}); target: test BLEU 25 in 60 min")
    print(f"written to {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
