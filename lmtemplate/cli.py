"""Command line: verbs and their arguments only; the work happens in ``lmtemplate.run``.

    python -m lmtemplate fit [-c FILE ...] [--ckpt last|best|PATH] [key=value ...]
    python -m lmtemplate validate|test [-c FILE ...] [--ckpt ...] [key=value ...]
    python -m lmtemplate predict [-c FILE ...] [--ckpt ...] (--prompt TEXT | --input FILE | --question Q --context C)
                                 [--output FILE] [key=value ...]
    python -m lmtemplate export --ckpt last|best|PATH --output DIR [--adapter] [run.name=... run.version=...]
    python -m lmtemplate average --ckpt last:N|best:N [run.name=... run.version=...] [--output FILE]
    python -m lmtemplate config [-c FILE ...] [key=value ...]
    python -m lmtemplate tasks [-c FILE ...]
    python -m lmtemplate sweep -c FILE ... [--dry-run] [key=value ...]
    python -m lmtemplate runs [PATH ...] [--metric NAME] [--csv | --json] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from lmtemplate.config import ConfigError
from lmtemplate.files import WRITE_ERRORS, cannot_write

EXIT_CONFIG = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lmtemplate", description="Train and use language models.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", action="append", default=[], metavar="FILE", help="YAML config; repeatable, later wins")
    common.add_argument("--debug", action="store_true", help="show tracebacks for config errors")
    common.add_argument("overrides", nargs="*", metavar="key=value", help="OmegaConf dotlist overrides")
    ckpt = argparse.ArgumentParser(add_help=False)
    ckpt.add_argument("--ckpt", metavar="last|best|PATH", help="checkpoint: last or best of the run named by run.name/run.version, a run directory, or a file")
    verbs.add_parser("fit", parents=[common, ckpt], help="train (the built-in demo with no arguments); --ckpt resumes")
    verbs.add_parser("validate", parents=[common, ckpt], help="validation metrics of a checkpoint (default --ckpt best)")
    verbs.add_parser("test", parents=[common, ckpt], help="test metrics of a checkpoint (default --ckpt best)")
    pred = verbs.add_parser("predict", parents=[common, ckpt], help="run a checkpoint on inputs (default --ckpt best)")
    src = pred.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one input on the command line")
    src.add_argument("--input", metavar="FILE", help="a file with one input per line (qa: SQuAD JSON or JSONL)")
    src.add_argument("--question", help="qa: one question, answered from --context")
    pred.add_argument("--context", help="qa: the passage that --question is answered from")
    pred.add_argument("--output", metavar="FILE", help="where predictions go (default: in the run directory)")
    export = verbs.add_parser("export", parents=[common, ckpt], help="write a checkpoint as a Hugging Face model folder")
    export.add_argument("--output", metavar="DIR", required=True, help="the folder: config.json, model.safetensors, tokenizer.json")
    export.add_argument("--adapter", action="store_true", help="a LoRA run's adapters alone, as a PEFT adapter folder")
    average = verbs.add_parser("average", parents=[common], help="average the weights of the last or best N kept checkpoints")
    average.add_argument("--ckpt", metavar="last:N|best:N", required=True, help="which of the run's checkpoint.keep checkpoints")
    average.add_argument("--output", metavar="FILE", help="the averaged checkpoint (default: in the run's checkpoints/)")
    verbs.add_parser("config", parents=[common], help="print the resolved config that fit would run")
    verbs.add_parser("tasks", parents=[common], help="list registered tasks and where each came from")
    sweep = verbs.add_parser("sweep", parents=[common], help="run the config's sweep: section; each trial is a run")
    sweep.add_argument("--dry-run", action="store_true", help="check the sweep and list what it would run; run nothing")
    runs = verbs.add_parser("runs", help="compare the runs under each PATH (default outputs), seeds grouped")
    runs.add_argument("paths", nargs="*", default=["outputs"], metavar="PATH", help="a sweep, or any folder of runs")
    runs.add_argument("--metric", help="the metric rows are sorted by (default: the runs' best.metric)")
    out = runs.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="the table as CSV")
    out.add_argument("--json", action="store_true", help="the table as JSON")
    runs.add_argument("--plot", metavar="FILE.png", help="also draw the metric against each setting, and the curves")
    runs.set_defaults(overrides=[], debug=False)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)} (overrides are key=value)")
    args.overrides += extra  # overrides may also come after options
    if args.verb in ("fit", "validate", "test", "predict"):
        from lmtemplate.callbacks.console import quiet

        quiet()
    try:
        return VERBS[args.verb](args)
    except (ConfigError, OSError) as e:
        if isinstance(e, OSError) and (e.errno not in WRITE_ERRORS or e.filename is None):
            raise
        if args.debug:
            traceback.print_exc()
        print(f"lmtemplate: error: {e if isinstance(e, ConfigError) else cannot_write(e.filename, e)}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_config(args) -> int:
    from lmtemplate.config import to_yaml
    from lmtemplate.run import resolved_config

    print(to_yaml(resolved_config(args.config, args.overrides)), end="")
    return 0


def cmd_tasks(args) -> int:
    from lmtemplate.config import peek, read_sources
    from lmtemplate.registry import load_tasks

    plugins = peek(read_sources(args.config, args.overrides), "plugins", [])
    tasks = load_tasks(plugins)
    width = max(len(n) for n in tasks)
    for name, spec in tasks.items():
        print(f"{name:<{width}}  {spec.module.__module__}.{spec.module.__qualname__}  [{spec.source}]")
    return 0


def cmd_fit(args) -> int:
    from lmtemplate import run
    from lmtemplate.callbacks.guards import Stopped

    s = run.prepare("fit", args.config, args.overrides, args.ckpt)
    try:
        metrics = run.fit(s)
    except Stopped as e:  # a signal or a non-finite loss: the message says what happened and what to do
        if s.trainer.is_global_zero:
            print(f"lmtemplate: {e}", file=sys.stderr)
        return e.exit_code
    if s.trainer.is_global_zero:
        print(f"\nrun directory: {s.run_dir}")
        shown = ", ".join(f"{k.removeprefix('val/')} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/"))
        print(f"final validation (step {metrics['step']}): {shown}")
        print(f"TensorBoard:   tensorboard --logdir {Path(s.loaded.cfg.run.root)}")
    return 0


def cmd_evaluate(args) -> int:
    from lmtemplate import run

    s = run.prepare(args.verb, args.config, args.overrides, args.ckpt or "best")
    metrics = run.evaluate(s, args.verb)
    if s.trainer.is_global_zero:
        for k, v in metrics.items():
            print(f"{k} = {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
        print(f"written to {s.run_dir / 'metrics.json'}")
    return 0


def cmd_predict(args) -> int:
    from lmtemplate import run

    if (args.question is None) != (args.context is None):
        raise ConfigError("--question and --context go together: a question is answered from a context")
    if args.output is not None and Path(args.output).is_dir():
        raise ConfigError(f"--output: {args.output} is a folder; name the file the predictions go to")
    if args.input is not None:
        inputs, flag = Path(args.input), "--input"
        if not inputs.is_file():
            raise ConfigError(f"--input: file not found: {inputs}")
    elif args.question is not None:
        inputs, flag = [{"id": "0", "question": args.question, "context": args.context}], "--question"
    else:
        inputs, flag = [args.prompt], "--prompt"
    s = run.prepare("predict", args.config, args.overrides, args.ckpt or "best")
    rows, out = run.predict(s, inputs, flag, Path(args.output) if args.output else None)
    if s.trainer.is_global_zero:
        if flag != "--input" and args.output is None:  # an input typed on the command line: its answer goes there too
            for row in rows:
                print(json.dumps(row, ensure_ascii=False))
        print(f"{len(rows)} prediction{'s' * (len(rows) != 1)} written to {out}")
    return 0


def cmd_export(args) -> int:
    from lmtemplate import run

    if args.config:
        raise ConfigError("export: the model is the checkpoint's, described by its run's config.yaml; drop -c")
    architecture = run.export(args.ckpt or "best", args.overrides, Path(args.output), args.adapter)
    print(f"{'a PEFT adapter of ' if args.adapter else ''}{architecture} written to {args.output}")
    return 0


def cmd_sweep(args) -> int:
    from lmtemplate import sweep

    return sweep.sweep(args.config, args.overrides, args.dry_run)


def cmd_runs(args) -> int:
    from lmtemplate import runs

    if args.overrides:
        raise ConfigError(f"runs: takes folders, not overrides: {' '.join(args.overrides)}")
    form = "csv" if args.csv else "json" if args.json else "text"
    print(runs.report(args.paths, args.metric, form, args.plot), end="")
    return 0


def cmd_average(args) -> int:
    from lmtemplate.average import average

    if args.config:
        raise ConfigError("average: the checkpoints are the run's, named by run.name (and run.version); drop -c")
    output, paths = average(args.ckpt, args.overrides, Path(args.output) if args.output else None)
    print(f"averaged {', '.join(p.name for p in paths)}\nwritten to {output}")
    return 0


VERBS = {
    "fit": cmd_fit,
    "validate": cmd_evaluate,
    "test": cmd_evaluate,
    "predict": cmd_predict,
    "export": cmd_export,
    "average": cmd_average,
    "config": cmd_config,
    "tasks": cmd_tasks,
    "sweep": cmd_sweep,
    "runs": cmd_runs,
}
