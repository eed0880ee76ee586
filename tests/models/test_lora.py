"""Low-rank adapters: the projections they adapt, a frozen base with adapters and the head training for every task,
checkpoints of what trains only, exact resumes, base plus adapters for every verb, merged exports equal to the
unmerged model, and PEFT adapter folders that peft loads. Bases are tiny runs, and a tiny Llama transformers builds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lmtemplate.cli import main
from lmtemplate.config import ConfigError, LoRAConfig
from lmtemplate.models import hf
from lmtemplate.models.backbone import load_backbone
from lmtemplate.models.gpt import GPT, GPTConfig
from lmtemplate.models.lora import LoRALinear, add_adapters, parts_of

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from test_resume import CAUSAL, ENCODER, assert_resumes_exactly  # noqa: E402

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.accelerator=cpu"]
SMALL_ENCODER = [*ENCODER, "trainer.max_steps=4", "data.demo_train=60", "data.demo_val=10"]
TEXT_ENCODER = [*ENCODER, "trainer.max_steps=4", "data.demo_lines=100"]
LORA = ["lora.rank=4", "optim.lr=1e-2", "optim.warmup_steps=0"]


def gpt(**options) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, n_layer=2, n_head=4, n_embd=32, **options))


def lora(**change) -> LoRAConfig:
    return LoRAConfig(**{"rank": 2, **change})


def test_the_parts_of_fused_projections_are_their_rows_with_grouped_query_attention():
    assert parts_of("blocks.0.attn.qkv", 32 + 2 * 8, 32, False) == {"q": (0, 32), "k": (32, 40), "v": (40, 48)}
    assert parts_of("blocks.0.mlp.fc", 96, 32, True) == {"gate": (0, 48), "up": (48, 96)}
    assert parts_of("blocks.0.mlp.fc", 128, 32, False) == {"up": (0, 128)}
    assert parts_of("decoder.blocks.1.cross.kv", 64, 32, False) == {"k": (0, 32), "v": (32, 64)}
    assert parts_of("lm_head", 50, 32, False) == {}


def test_adapters_go_on_the_targets_only_and_everything_else_is_frozen():
    model = gpt(n_kv_head=2, mlp="swiglu")
    add_adapters(model, lora(targets=["q", "v", "blocks.1.mlp.*"]))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted([f"blocks.{i}.attn.qkv.lora_{m}.{p}" for i in (0, 1) for m in "AB" for p in "qv"]
                               + [f"blocks.1.mlp.{f}.lora_{m}.{p}" for f, ps in (("fc", ("gate", "up")), ("proj", ("down",)))
                                  for m in "AB" for p in ps])
    assert model.blocks[0].attn.qkv.lora_B["v"].shape == (16, 2)  # 2 key/value heads of 8
    assert isinstance(model.blocks[0].mlp.proj, nn.Linear) and not isinstance(model.blocks[0].mlp.proj, LoRALinear)


def test_a_fresh_adapter_changes_nothing_and_a_trained_one_updates_its_part_only():
    model, base = gpt(n_kv_head=2), gpt(n_kv_head=2)
    add_adapters(model, lora(targets=["k"], alpha=4.0))
    x = torch.randn(3, 5, 32)
    qkv, plain = model.blocks[0].attn.qkv, base.blocks[0].attn.qkv
    assert torch.equal(qkv(x), plain(x))
    torch.nn.init.normal_(qkv.lora_B["k"])
    delta = qkv(x) - plain(x)
    assert delta[..., :32].abs().max() == 0 and delta[..., 48:].abs().max() == 0
    expected = 2.0 * x @ (qkv.lora_B["k"] @ qkv.lora_A["k"]).T  # alpha / rank = 2
    assert torch.allclose(delta[..., 32:48], expected, atol=1e-5)


def test_a_target_that_matches_no_projection_is_an_error_naming_those_there_are():
    with pytest.raises(ConfigError, match=r"lora.targets: 'query' matches no projection of this GPT; its projections "
                                          r"are down, k, o, q, up, v, named like blocks.0.attn.q"):
        add_adapters(gpt(), lora(targets=["q", "query"]))


# ----------------------------------------------------------------------------------------- runs with adapters


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """A causal_lm run and a masked_lm run (the encoder), tiny, for the tasks to start from."""
    root = tmp_path_factory.mktemp("bases")
    with pytest.MonkeyPatch.context() as m:
        m.chdir(root)
        torch.set_num_threads(1)
        assert main(["fit", *CAUSAL, *QUIET, "trainer.max_steps=4", "run.name=gpt"]) == 0
        assert main(["fit", "-c", str(REPO / "configs/pretrain/bert-tiny.yaml"), *TEXT_ENCODER, *QUIET,
                     "run.name=bert"]) == 0
    return {"decoder": root / "outputs/gpt/version_0", "encoder": root / "outputs/bert/version_0"}


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints/last.ckpt", weights_only=False)


TASKS = {  # task -> (its arguments, its base, what trains besides the adapters: prefixes, the last always there)
    "causal_lm": ([*CAUSAL, "trainer.max_steps=4"], "decoder", []),
    "classification": (["-c", str(REPO / "configs/finetune/classification-demo.yaml"), *SMALL_ENCODER], "encoder",
                       ["pooler.", "head.1."]),
    "qa": (["-c", str(REPO / "configs/finetune/qa-demo.yaml"), *SMALL_ENCODER, "model.block_size=64", "data.doc_stride=16"], "encoder", ["head."]),
    "masked_lm": (["-c", str(REPO / "configs/pretrain/bert-tiny.yaml"), *TEXT_ENCODER], "encoder",
                  ["mlm_head."]),
    "translation": (["-c", str(REPO / "configs/finetune/translation-demo.yaml"), *SMALL_ENCODER, "model.block_size=48", "model.type_vocab_size=2",
                     "decode.val_sentences=2", "decode.beam_size=1"], "encoder", ["model.decoder."]),
    "summarization": (["-c", str(REPO / "configs/finetune/summarization-demo.yaml"), *SMALL_ENCODER, "model.arch=decoder",
                       "model.positions=learned", "data.max_target_tokens=8", "decode.val_sentences=2", "decode.beam_size=1"], "decoder", []),
    "similarity (a plugin)": (["-c", str(REPO / "configs/plugins/similarity-demo.yaml"), f"plugins=[{REPO}/plugins]",
                               *SMALL_ENCODER], "encoder", ["head."]),
}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_trains_its_adapters_and_head_on_a_frozen_base_and_checkpoints_only_them(
        bases, tmp_path, monkeypatch, clean_registry, task):
    args, base, head = TASKS[task]
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *args, *QUIET, *LORA, f"model.init_from={bases[base]}", "run.name=lora"]) == 0
    run = tmp_path / "outputs/lora/version_0"
    saved = checkpoint(run)
    state = saved["state_dict"]
    adapters = [k for k in state if ".lora_" in k]
    assert adapters and all(not torch.equal(state[k], torch.zeros_like(state[k])) for k in adapters if ".lora_B." in k)
    assert sorted(set(state) - set(adapters)) == sorted(k for k in state if any(k.startswith(h) for h in head))
    assert not head or any(k.startswith(head[-1]) for k in state)  # the head trains and is saved
    assert saved["hyper_parameters"]["model"]["init_from"] == str(bases[base])  # the checkpoint names its base
    assert main(["validate", "--ckpt", "last", "run.name=lora", *QUIET]) == 0


def test_validate_test_and_predict_load_the_base_with_the_adapters(bases, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *CAUSAL, *QUIET, *LORA, "trainer.max_steps=4", f"model.init_from={bases['decoder']}",
                 "run.name=lora", "lora.dropout=0.1"]) == 0
    run = tmp_path / "outputs/lora/version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    report = json.loads((run / "init_from.json").read_text())  # the base loaded, the adapters alone fresh
    assert "model.tok_emb.weight" in report["loaded"] and report["fresh"]
    assert all(".lora_" in k for k in report["fresh"]), report["fresh"]
    assert main(["validate", "--ckpt", "last", "run.name=lora", *QUIET]) == 0
    assert json.loads((run / "metrics.json").read_text())["validate"][-1]["val/loss"] == pytest.approx(metrics["val/loss"], abs=1e-6)
    assert main(["test", "--ckpt", "last", "run.name=lora", *QUIET]) == 0
    moved = shutil.copytree(bases["decoder"], tmp_path / "moved")  # a base found where it is now
    assert main(["validate", "--ckpt", "last", "run.name=lora", f"model.init_from={moved}", *QUIET]) == 0
    assert main(["predict", "--ckpt", "last", "run.name=lora", "--prompt", "the", "generate.temperature=0", *QUIET]) == 0
    base_size = (bases["decoder"] / "checkpoints/last.ckpt").stat().st_size
    lora_size = (run / "checkpoints/last.ckpt").stat().st_size
    print(f"LoRA checkpoint {lora_size} bytes, {lora_size / base_size:.3f} of the base's {base_size}")
    assert lora_size < 0.5 * base_size


def test_a_run_with_adapters_resumes_exactly(bases, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    args = [*CAUSAL, *QUIET, *LORA, f"model.init_from={bases['decoder']}", "lora.dropout=0.1", "lora.targets=[q,v,up]"]
    assert_resumes_exactly(args, 12, ["trainer.max_steps=7"])


@pytest.mark.slow
def test_a_run_with_adapters_trains_under_ddp(bases, tmp_path):
    args = [*CAUSAL, *QUIET, *LORA, f"model.init_from={bases['decoder']}", "trainer.max_steps=4", "trainer.devices=2",
            "trainer.strategy=ddp", "run.name=ddp"]
    for verb in (["fit", *args], ["validate", "--ckpt", "last", "run.name=ddp"]):  # both ranks load base + adapters
        proc = subprocess.run([sys.executable, "-m", "lmtemplate", *verb], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "outputs/ddp/version_0"
    assert all(".lora_" in k for k in checkpoint(run)["state_dict"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validate"][-1]["val/loss"] == pytest.approx(metrics["val/loss"], abs=1e-6)


# ----------------------------------------------------------------------------------------- export and PEFT


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny Llama (grouped-query attention, untied embeddings) from transformers, with adapters on every kind of
    projection trained a few steps: (the folder, the run's root)."""
    transformers = pytest.importorskip("transformers")
    from test_hf import SMALL, decoder_folder

    root = tmp_path_factory.mktemp("llama")
    folder = decoder_folder(transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SMALL, num_key_value_heads=2, tie_word_embeddings=False)), root / "llama")
    with pytest.MonkeyPatch.context() as m:
        m.chdir(root)
        assert main(["fit", "task=causal_lm", "run.name=lora", f"model.init_from={folder}", "trainer.max_steps=3",
                     "lora.targets=[q,k,v,o,gate,up,down]", "model.block_size=32", *QUIET, *LORA]) == 0
    return folder, root


@pytest.fixture
def llama_run(llama, monkeypatch):
    monkeypatch.chdir(llama[1])
    return llama[0], llama[1] / "outputs/lora/version_0"


def ours(folder: Path, run: Path, ids: torch.Tensor) -> torch.Tensor:
    """The unmerged model's logits: the base from the folder, the adapters from the run's checkpoint."""
    model = GPT(GPTConfig(**{k: v for k, v in hf.model_fields(folder).items() if k != "arch"}))
    add_adapters(model, LoRAConfig(rank=4, targets=["q", "k", "v", "o", "gate", "up", "down"]))
    load_backbone(model, str(folder), "decoder")
    state = checkpoint(run)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, strict=False)
    with torch.no_grad():
        return model.eval()(ids)


def test_export_merges_the_adapters_into_the_weights(llama_run):
    transformers = pytest.importorskip("transformers")
    folder, run = llama_run
    assert main(["export", "--ckpt", "last", "run.name=lora", "--output", "OUT"]) == 0
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exported = transformers.LlamaForCausalLM.from_pretrained("OUT").eval()(input_ids=ids).logits
        base = transformers.LlamaForCausalLM.from_pretrained(folder).eval()(input_ids=ids).logits
    unmerged = ours(folder, run, ids)
    print(f"merged export: logits max |diff| {(exported - unmerged).abs().max().item():.2e}; the adapters moved them "
          f"{(unmerged - base).abs().max().item():.2e}")
    assert (unmerged - base).abs().max() > 1e-3  # the adapters learned something to merge
    torch.testing.assert_close(exported, unmerged, atol=1e-5, rtol=0)


def test_export_adapter_writes_a_peft_folder_that_peft_loads_with_equal_logits(llama_run):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    folder, run = llama_run
    assert main(["export", "--ckpt", "last", "run.name=lora", "--output", "ADAPTER", "--adapter"]) == 0
    assert sorted(p.name for p in Path("ADAPTER").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    base = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    model = peft.PeftModel.from_pretrained(base, "ADAPTER").eval()
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = model(input_ids=ids).logits
        without = transformers.LlamaForCausalLM.from_pretrained(folder).eval()(input_ids=ids).logits
    unmerged = ours(folder, run, ids)
    assert (theirs - without).abs().max() > 1e-3  # peft applied the adapters
    print(f"PEFT adapter: logits max |diff| {(theirs - unmerged).abs().max().item():.2e}")
    torch.testing.assert_close(theirs, unmerged, atol=1e-5, rtol=0)
