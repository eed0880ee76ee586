"""Memory of a Hugging Face import: peak resident memory while ``model.init_from`` loads a random Llama of about
500M parameters, as a ratio to its model.safetensors (the issue's target: <= 1.5).

    python benchmarks/import_memory.py            # ~507M parameters (a 2.0 GB file): ~5 GB of memory, minutes
    python benchmarks/import_memory.py --quick    # a tiny Llama: a smoke test of the whole path (seconds)

transformers builds the model from a ``LlamaConfig`` (no download: random weights; grouped-query attention,
untied embeddings) and ``save_pretrained`` writes it to a temporary folder. Then, each in a fresh subprocess
(``OMP_NUM_THREADS=1``), the project imports it as ``Task.setup`` does: the GPT built from ``hf.model_fields``,
then ``load_backbone``, which copies the checkpoint one tensor at a time into the model's parameters. The
baseline subprocess does the same but reads every tensor first and calls ``load_state_dict`` (the import as it
was before: the file's tensors and the model side by side). Each reports its peak resident memory (``VmHWM``),
its resident memory after ``import torch, lmtemplate`` (before any model exists), and whether the model's
weights equal the file's. Ratios: the whole peak over the file size, and the peak less that start over the file
size. Written to outputs/benchmarks/import_memory.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import default_out, environment, write_json  # noqa: E402

# ~507M parameters: 24 layers of 1280 (20 heads of 64, 4 key/value heads), SwiGLU 3584, a 32,000-token vocabulary
FULL = dict(vocab_size=32000, hidden_size=1280, intermediate_size=3584, num_hidden_layers=24, num_attention_heads=20,
            num_key_value_heads=4, max_position_embeddings=2048)
QUICK = dict(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)
MIB = 2 ** 20


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / MIB
    raise KeyError(field)


def child(folder: Path, way: str, result: Path) -> None:
    """Import ``folder`` the project's way (``lazy``) or all tensors at once (``baseline``); write the memory."""
    import torch
    from safetensors import safe_open

    from lmtemplate.models import hf
    from lmtemplate.models.backbone import load_backbone
    from lmtemplate.models.gpt import GPT, GPTConfig

    start = status_mib("VmRSS")
    fields = {k: v for k, v in hf.model_fields(folder).items() if k != "arch"}
    model = GPT(GPTConfig(**fields))
    if way == "lazy":
        load_backbone(model, str(folder), "decoder")
    else:
        source, _ = hf.backbone_state(folder, model.cfg.block_size)
        model.load_state_dict(dict(source))
    peak = status_mib("VmHWM")
    with safe_open(str(folder / "model.safetensors"), "pt") as f:  # the first and last layers' weights arrived
        same = all(torch.equal(model.state_dict()[ours], f.get_tensor(theirs)) for ours, theirs in
                   (("tok_emb.weight", "model.embed_tokens.weight"), ("lm_head.weight", "lm_head.weight"),
                    (f"blocks.{model.cfg.n_layer - 1}.mlp.proj.weight",
                     f"model.layers.{model.cfg.n_layer - 1}.mlp.down_proj.weight")))
    result.write_text(json.dumps({"start_rss_mib": start, "peak_rss_mib": peak, "weights_match": same,
                                  "parameters": sum(p.numel() for p in model.parameters())}))


def measure(folder: Path, way: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, __file__, "--child", str(folder), way, str(result)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the {way} import failed:\n{proc.stderr[-3000:]}")
        return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny Llama: a smoke test")
    p.add_argument("--out", type=Path, default=default_out("import_memory"))
    p.add_argument("--child", nargs=3, metavar=("FOLDER", "WAY", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(Path(args.child[0]), args.child[1], Path(args.child[2]))

    import torch
    import transformers

    shape = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llama"
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape, tie_word_embeddings=False))
        model.save_pretrained(folder)
        del model
        file_mib = (folder / "model.safetensors").stat().st_size / MIB
        runs = {way: measure(folder, way) for way in ("lazy", "baseline")}
    for run in runs.values():
        run["peak_over_file"] = run["peak_rss_mib"] / file_mib
        run["added_over_file"] = (run["peak_rss_mib"] - run["start_rss_mib"]) / file_mib
    result = {"quick": args.quick, "shape": shape, "parameters": runs["lazy"]["parameters"], "file_mib": file_mib,
              "import": runs["lazy"], "baseline_all_tensors_first": runs["baseline"], "environment": environment()}
    write_json(args.out, result)
    print(f"{result['parameters'] / 1e6:.1f}M parameters, model.safetensors {file_mib:.1f} MiB")
    for name, run in (("import (one tensor at a time)", runs["lazy"]), ("baseline (all tensors first)", runs["baseline"])):
        print(f"{name}: peak {run['peak_rss_mib']:.0f} MiB = {run['peak_over_file']:.2f}x the file "
              f"({run['added_over_file']:.2f}x above the {run['start_rss_mib']:.0f} MiB of the started interpreter); "
              f"weights match: {run['weights_match']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
