"""Bad input of every kind, for every task: exit code 2, a message that names the file (and line) or the key,
no traceback, and no new run directory. Each case fails before any training. docs/errors.md lists them.

A case is (argv, files, expected): ``files`` are written in an empty working directory first (bytes as they
are, text as UTF-8); the message must hold every ``expected`` substring.
"""

import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from lmtemplate.cli import EXIT_CONFIG, main

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("clean_registry")

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16", "tokenizer.vocab_size=300",
        "trainer.accelerator=cpu", "trainer.max_steps=2", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "data.demo_lines=50"]
LATIN1 = "le café est chaud\n".encode("latin-1")  # é (0xe9) at byte 6 of the line
SENTENCES = "".join(f"the dog number {i} runs to the small red house and back again\n" for i in range(40))
SUMMARY = '{"source": "a b c", "summary": "a"}\n'
TSV = "text\tlabel\n" + "".join(f"good film {i}\tpos\nbad film {i}\tneg\n" for i in range(10))


def truncated_checkpoint() -> bytes:
    whole = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, whole)
    return whole.getvalue()[: len(whole.getvalue()) // 2]


class RunsCode:
    """Pickled as a call of os.system: a checkpoint that would run a command if loaded without weights_only."""

    def __reduce__(self):
        import os

        return os.system, ("echo this never runs",)


def code_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "hook": RunsCode()}, buffer)
    return buffer.getvalue()
def kept_checkpoint(step: int, task: str = "causal_lm", shape: tuple = (2,), validated: dict | None = None) -> bytes:
    """A periodic checkpoint (checkpoint.keep) with one weight, as ``average`` reads it."""
    data = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(shape)}, "global_step": step, "hyper_parameters": {"task": task},
                **({"validated": validated} if validated else {})}, data)
    return data.getvalue()


KEPT = "outputs/demo/version_0/checkpoints/"
KEPT_RUN = {"outputs/demo/version_0/config.yaml": "task: causal_lm\n", KEPT + "step-5.ckpt": kept_checkpoint(5)}


def squad(question: str = "who sat?", answer: str = "the cat", start: int = 0) -> str:
    qa = {"id": "q1", "question": question, "answers": [{"text": answer, "answer_start": start}]}
    return json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "the cat sat on the mat.", "qas": [qa]}]}]})


def plugin(task: str, config: str = "M", post_init: str = "", body: str = "pass") -> str:
    """A plugin task on the text data module, its config class ``config``'s defaults checked by ``post_init``."""
    return f'''
from dataclasses import dataclass, field

import torch

from lmtemplate import Task, register_task
from lmtemplate.config import ConfigError
from lmtemplate.data.corpus import TextDataConfig
from lmtemplate.data.lm import TextDataModule
from lmtemplate.tokenization import TokenizerConfig


@dataclass
class {config}:
    block_size: int = 16
    width: int = 0

    def __post_init__(self):
        {post_init or "pass"}


@dataclass
class Cfg:
    model: {config} = field(default_factory={config})
    data: TextDataConfig = field(default_factory=TextDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


@register_task("{task}", config=Cfg, datamodule=TextDataModule)
class Plugin(Task):
    def __init__(self, cfg, datamodule):
        super().__init__(cfg)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        {body}

    def loss(self, batch):
        return self.w.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
'''


ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(  # 9**9 values from 380 bytes
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


def llama_json(**change) -> str:
    """A tiny Llama's config.json (no weights: each case fails before they are read)."""
    return json.dumps({"model_type": "llama", "vocab_size": 300, "hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64, **change})


BAD_DEFAULT = plugin("bad_default", post_init='raise ConfigError(f"model.width: expected >= 1, got {self.width}")')
BIGRAM = ["-c", "configs/plugins/bigram-demo.yaml", "data.demo_lines=50", "tokenizer.vocab_size=300",
          "trainer.accelerator=cpu"]
CKPT_RUN = {"outputs/demo/version_0/config.yaml": "task: causal_lm\n", "outputs/demo/version_0/checkpoints/notes.txt": ""}

CASES = {
    # configs
    "unknown key in a file": (["fit", "-c", "typo.yaml"], {"typo.yaml": "model:\n  n_layr: 2\n"},
                              ["unknown key 'model.n_layr' in typo.yaml", "n_layer"]),
    "unknown key on the command line": (["fit", "data.batchsize=4"], {}, ["unknown key 'data.batchsize'", "batch_size"]),
    "wrong type": (["fit", "model.n_layer=abc"], {}, ["model.n_layer", "'abc'"]),
    "bad YAML": (["fit", "-c", "broken.yaml"], {"broken.yaml": "model:\n  n_layer: [1\n  n_head: 2\n"},
                 ["broken.yaml, line 3", "not valid YAML"]),
    "extends cycle": (["fit", "-c", "a.yaml"], {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"},
                      ["extends cycle", "a.yaml -> ", "b.yaml"]),
    "missing -c file": (["fit", "-c", "nope.yaml"], {}, ["config file not found: nope.yaml"]),
    "missing extends parent": (["fit", "-c", "orphan.yaml"], {"orphan.yaml": "extends: gone.yaml\n"},
                               ["config file not found: gone.yaml (named in extends: of", "orphan.yaml)"]),
    "unknown task": (["fit", "task=causal"], {}, ["unknown task 'causal' (key 'task')", "causal_lm"]),
    "required key left ???": (["fit", "-c", "own.yaml", "data.val=own.yaml"],
                              {"own.yaml": "task: summarization\ndata:\n  train: ???\n  val: ???\n"},
                              ["data.train: required, and not set: own.yaml leaves it ??? for you to give; "
                               "add data.train=... to the command line"]),
    "override without =": (["fit", "model.n_layer"], {}, ["'model.n_layer'", "expected key=value"]),
    "causal_lm: bad optim.schedule": (["fit", "optim.schedule=sawtooth"], {}, ["optim.schedule: 'sawtooth'"]),
    "causal_lm: bad model.positions": (["fit", "model.positions=spiral"], {}, ["model.positions: 'spiral'"]),
    "causal_lm: bad tokenizer.kind": (["fit", "tokenizer.kind=morse"], {}, ["tokenizer.kind: 'morse'"]),
    "causal_lm: generate.top_p > 1": (["fit", "generate.top_p=2"], {}, ["generate.top_p", "got 2"]),
    "masked_lm: masking.rate > 1": (["fit", "task=masked_lm", "masking.rate=1.5"], {}, ["masking.rate", "1.5"]),
    "causal_lm: data.tokenize_workers 0": (["fit", "data.tokenize_workers=0"], {}, ["data.tokenize_workers", "got 0"]),
    "classification: data.batch_tokens < 0": (["fit", "task=classification", "data.batch_tokens=-5"], {},
                                               ["data.batch_tokens", "got -5"]),
    "similarity plugin: bad best.metric": (["fit", f"plugins=[{REPO}/plugins/similarity.py]", "task=similarity",
                                            "best.metric=val/f1"], {}, ["best.metric: 'val/f1' is not one of val/pearson"]),
    "classification: bad best.metric": (["fit", "task=classification", "best.metric=val/bleu"], {},
                                        ["best.metric: 'val/bleu'"]),
    "qa: answer.max_answer_length 0": (["fit", "task=qa", "answer.max_answer_length=0"], {},
                                       ["answer.max_answer_length", "got 0"]),
    "translation: decode.beam_size 0": (["fit", "task=translation", "decode.beam_size=0"], {},
                                        ["decode.beam_size", "got 0"]),
    "translation: label_smoothing 1": (["fit", "task=translation", "optim.label_smoothing=1"], {},
                                       ["optim.label_smoothing", "got 1"]),
    "summarization: unknown model.arch": (["fit", "task=summarization", "model.arch=encoder"], {},
                                          ["model.arch: 'encoder' is not one of encoder_decoder, decoder"]),
    "summarization: summary room too large": (
        ["fit", "task=summarization", "model.arch=decoder", "model.block_size=64", "data.max_target_tokens=63"], {},
        ["data.max_target_tokens: 63 does not fit model.block_size=64; expected 2 to 62"]),
    "summarization: negative no_repeat_ngram_size": (["fit", "task=summarization", "decode.no_repeat_ngram_size=-1"],
                                                     {}, ["decode.no_repeat_ngram_size: expected >= 0 (0: off), got -1"]),
    "summarization: repetition_penalty 0": (["fit", "task=summarization", "decode.repetition_penalty=0"], {},
                                            ["decode.repetition_penalty: expected a positive number", "got 0"]),
    "summarization: warm_start without init_from": (
        ["fit", "task=summarization", "model.warm_start=true", "model.decoder_norms=encoder"], {},
        ["model.warm_start: the decoder starts as the pretrained encoder's first blocks", "model.init_from (got None)"]),
    "summarization: warm_cross without warm_start": (["fit", "task=summarization", "model.warm_cross=true"], {},
                                                     ["model.warm_cross:", "set model.warm_start=true too"]),
    "bad fsdp.sharding_strategy": (["fit", "fsdp.sharding_strategy=HALF"], {}, ["fsdp.sharding_strategy: 'HALF'"]),
    # trainer settings
    "unknown trainer key": (["fit", "-c", "t.yaml"], {"t.yaml": "trainer:\n  max_step: 5\n"},
                            ["unknown key 'trainer.max_step' in t.yaml", "max_steps"]),
    "owned trainer key": (["fit", "trainer.logger=false"], {}, ["trainer.logger (in the command line) is set by lmtemplate"]),
    "gpu accelerator without a GPU": (["fit", "trainer.accelerator=gpu"], {},
                                      ["trainer.accelerator: 'gpu' is not available", "(in the command line)"]),
    "gpu.yaml without a GPU": (["fit", "-c", "gpu.yaml"], {"gpu.yaml": "trainer:\n  accelerator: gpu\n  devices: 1\n"},
                               ["trainer.accelerator", "(in gpu.yaml)"]),
    "ddp.yaml without a GPU": (["fit", "-c", "ddp.yaml"],
                               {"ddp.yaml": "trainer:\n  accelerator: gpu\n  devices: -1\n  strategy: ddp\n"},
                               ["trainer.accelerator", "(in ddp.yaml)"]),
    "bad precision": (["fit", "trainer.precision=bf17"], {}, ["trainer:", "'bf17'"]),
    # text corpora (causal_lm, masked_lm)
    "causal_lm: glob matching nothing": (["fit", "data.train=texts/*.txt"], {}, ["data.train: no file matches 'texts/*.txt'"]),
    "causal_lm: empty .txt": (["fit", *TINY, "data.train=empty.txt", "data.val=val.txt"],
                              {"empty.txt": "", "val.txt": SENTENCES}, ["data.train (empty.txt)", "model.block_size=16"]),
    "causal_lm: .txt shorter than one window": (["fit", *TINY, "data.train=short.txt"], {"short.txt": "a few words\n"},
                                                ["data.train (short.txt) holds", "model.block_size=16"]),
    "causal_lm: val_fraction too small": (["fit", *TINY, "data.train=long.txt", "data.val_fraction=0.01"],
                                          {"long.txt": SENTENCES},
                                          ["the last data.val_fraction=0.01 of data.train (long.txt)", "block_size=16"]),
    "causal_lm: non-UTF-8 .txt": (["fit", *TINY, "data.train=latin.txt", "data.val=val.txt"],
                                  {"latin.txt": SENTENCES.encode() + LATIN1, "val.txt": SENTENCES},
                                  ["latin.txt, line 41: not valid UTF-8 (byte 0xe9 at byte offset"]),
    "causal_lm: bad JSON line in .jsonl": (["fit", *TINY, "data.train=c.jsonl"], {"c.jsonl": '{"text": "a"}\n{"text": \n'},
                                           ["c.jsonl, line 2"]),
    "causal_lm: .jsonl without the text field": (["fit", *TINY, "data.train=c.jsonl"], {"c.jsonl": '{"body": "a"}\n'},
                                                 ["c.jsonl, line 1", "'text' (data.text_field)"]),
    "causal_lm: non-UTF-8 .jsonl": (["fit", *TINY, "data.train=c.jsonl"], {"c.jsonl": b'{"text": "caf\xe9"}\n'},
                                    ["c.jsonl, line 1: not valid UTF-8 (byte 0xe9 at byte offset 13"]),
    "masked_lm: empty .txt": (["fit", "task=masked_lm", *TINY, "data.train=empty.txt", "data.val=val.txt"],
                              {"empty.txt": "", "val.txt": SENTENCES}, ["data.train (empty.txt)", "model.block_size=16"]),
    "masked_lm: non-UTF-8 .txt": (["fit", "task=masked_lm", *TINY, "data.train=latin.txt", "data.val=val.txt"],
                                  {"latin.txt": LATIN1, "val.txt": SENTENCES}, ["latin.txt, line 1: not valid UTF-8"]),
    # tables (classification)
    "classification: missing train file": (["fit", "task=classification", "data.train=nope.tsv", "data.val=val.tsv"],
                                           {"val.tsv": TSV}, ["data.train: file not found: nope.tsv"]),
    "classification: train without val": (["fit", "task=classification", "data.train=train.tsv"], {"train.tsv": TSV},
                                          ["data.val: a validation set is required"]),
    "classification: empty .tsv": (["fit", "task=classification", "data.train=train.tsv", "data.val=val.tsv"],
                                   {"train.tsv": "", "val.tsv": TSV}, ["train.tsv: the file is empty"]),
    "classification: .tsv without the label column": (
        ["fit", "task=classification", "data.train=train.tsv", "data.val=val.tsv"],
        {"train.tsv": "text\tstars\ngood\t5\n", "val.tsv": TSV},
        ["train.tsv, line 1: the header has no column 'label' (set data.label_column)"]),
    "classification: .tsv row with a missing field": (
        ["fit", "task=classification", "data.train=train.tsv", "data.val=val.tsv"],
        {"train.tsv": "text\tlabel\ngood\tpos\nbad film\n", "val.tsv": TSV}, ["train.tsv, line 3: expected 2 fields"]),
    "classification: non-UTF-8 .tsv": (["fit", "task=classification", "data.train=train.tsv", "data.val=val.tsv"],
                                       {"train.tsv": b"text\tlabel\ncaf\xe9\tpos\n", "val.tsv": TSV},
                                       ["train.tsv, line 2: not valid UTF-8 (byte 0xe9 at byte offset 14"]),
    "classification: non-UTF-8 .csv": (["fit", "task=classification", "data.train=train.csv", "data.val=val.tsv"],
                                       {"train.csv": b"text,label\ngood,pos\ncaf\xe9,neg\n", "val.tsv": TSV},
                                       ["train.csv, line 3: not valid UTF-8 (byte 0xe9 at byte offset 23"]),
    "classification: bad JSON line in .jsonl": (
        ["fit", "task=classification", "data.train=train.jsonl", "data.val=val.tsv"],
        {"train.jsonl": '{"text": "good", "label": "pos"}\n{"text": "bad",\n', "val.tsv": TSV},
        ["train.jsonl, line 2: not valid JSON"]),
    # SQuAD (qa)
    "qa: missing val file": (["fit", "task=qa", "data.train=train.json", "data.val=nope.json"], {"train.json": squad()},
                             ["data.val: file not found: nope.json"]),
    "qa: SQuAD file not JSON": (["fit", "task=qa", "data.train=train.json", "data.val=val.json"],
                                {"train.json": '{"data": [\n  {"title": }\n]}', "val.json": squad()},
                                ["train.json: not valid JSON (line 2"]),
    "qa: answer_start mismatch": (["fit", "task=qa", "data.train=train.json", "data.val=val.json"],
                                  {"train.json": squad(start=4), "val.json": squad()},
                                  ["train.json, article 0, paragraph 0, example q1: answer_start 4"]),
    "qa: question missing": (["fit", "task=qa", "data.train=train.jsonl", "data.val=val.json"],
                             {"train.jsonl": '{"id": "a", "context": "the cat", "answers": []}\n', "val.json": squad()},
                             ["train.jsonl, line 1", "missing field 'question'"]),
    "qa: non-UTF-8 SQuAD JSON": (["fit", "task=qa", "data.train=train.json", "data.val=val.json"],
                                 {"train.json": squad().encode() + b"\n\xff\n", "val.json": squad()},
                                 ["train.json, line 2: not valid UTF-8 (byte 0xff"]),
    # parallel text (translation)
    "translation: misaligned files": (["fit", "task=translation", "data.train=train", "data.val=train"],
                                      {"train.src": "a\nb\nc\n", "train.tgt": "x\ny\n"},
                                      ["train.src has 3 lines but train.tgt has 2"]),
    "translation: missing target file": (["fit", "task=translation", "data.train=train", "data.val=train"],
                                         {"train.src": "a\n"}, ["data.train: file not found: train.tgt"]),
    "translation: empty line": (["fit", "task=translation", "data.train=train", "data.val=train"],
                                {"train.src": "a\n\nc\n", "train.tgt": "x\ny\nz\n"}, ["train.src, line 2: empty line"]),
    "translation: non-UTF-8 aligned file": (["fit", "task=translation", "data.train=train", "data.val=train"],
                                            {"train.src": "a\n".encode() + LATIN1, "train.tgt": "x\ny\n"},
                                            ["train.src, line 2: not valid UTF-8 (byte 0xe9 at byte offset 8"]),
    "translation: table without the target column": (
        ["fit", "task=translation", "data.train=train.tsv", "data.val=train.tsv"],
        {"train.tsv": "src\tde\na\tb\n"}, ["train.tsv, line 1: the header has no column 'tgt' (set data.tgt_lang)"]),
    # documents and summaries (summarization)
    "summarization: table without the source column": (
        ["fit", "task=summarization", "data.train=train.tsv", "data.val=train.tsv"],
        {"train.tsv": "document\tsummary\na b\ta\n"}, ["train.tsv, line 1: the header has no column 'source' (set data.source_column)"]),
    "summarization: empty source": (["fit", "task=summarization", "data.train=train.jsonl", "data.val=train.jsonl"],
                                     {"train.jsonl": SUMMARY + '{"source": " ", "summary": "a"}\n'},
                                     ["train.jsonl, line 2: empty text in column 'source' (data.source_column)"]),
    "summarization: empty summary": (["fit", "task=summarization", "data.train=train.csv", "data.val=train.csv"],
                                     {"train.csv": "source,summary\na b,a\nc d,\n"},
                                     ["train.csv, line 3: empty text in column 'summary' (data.target_column)"]),
    "summarization: reference list not of texts": (
        ["fit", "task=summarization", "data.train=train.jsonl", "data.val=train.jsonl"],
        {"train.jsonl": SUMMARY + '{"source": "a b", "summary": ["a", 3]}\n'},
        ["train.jsonl, line 2: column 'summary' holds ['a', 3]; expected a text or a list of non-empty texts"]),
    "summarization: row without a summary": (
        ["fit", "task=summarization", "data.train=train.jsonl", "data.val=val.jsonl", "data.reference_columns=[s1,s2]"],
        {"train.jsonl": SUMMARY, "val.jsonl": SUMMARY + '{"source": "a b", "s3": "a"}\n'},
        ["val.jsonl, line 2: no summary: the row has no column 'summary' (data.target_column) nor any of s1, s2"]),
    "summarization: source neither a text nor a list": (
        ["fit", "task=summarization", "data.train=train.jsonl", "data.val=train.jsonl"],
        {"train.jsonl": SUMMARY + '{"source": {"title": "Quarterly results", "body": "Revenue grew by a tenth over the year"}, "summary": "a"}\n'},
        ["train.jsonl, line 2: column 'source' (data.source_column) holds {'title': 'Quarterly results', 'body': 'Revenue grew by a ...; "
         "expected a text or a list of non-empty texts"]),
    # checkpoints
    "missing checkpoint": (["validate", "--ckpt", "nope.ckpt"], {}, ["--ckpt: checkpoint file not found: nope.ckpt"]),
    "truncated checkpoint": (["validate", "--ckpt", "cut.ckpt"], {"cut.ckpt": truncated_checkpoint()},
                             ["checkpoint cut.ckpt", "truncated"]),
    "not a checkpoint": (["validate", "--ckpt", "notes.ckpt"], {"notes.ckpt": "just text\n"},
                         ["checkpoint notes.ckpt", "not a PyTorch checkpoint file"]),
    "checkpoint that would run code": (["validate", "--ckpt", "evil.ckpt"], {"evil.ckpt": code_checkpoint()},
                                       ["checkpoint evil.ckpt: it holds something that torch.load(weights_only=True) "
                                        "refuses to rebuild", "GLOBAL posix.system whose module posix is blocked"]),
    "resume from a truncated checkpoint": (["fit", "--ckpt", "cut.ckpt"], {"cut.ckpt": truncated_checkpoint()},
                                           ["checkpoint cut.ckpt", "truncated"]),
    "--ckpt best with no run": (["validate", "--ckpt", "best"], {}, ["no runs under outputs/demo"]),
    "--ckpt best, run without one": (["test", "--ckpt", "best"], CKPT_RUN,
                                     ["no best checkpoint in outputs/demo/version_0/checkpoints",
                                      "no version under outputs/demo has one"]),
    "predict, missing --input": (["predict", "--input", "nope.txt"], {}, ["--input: file not found: nope.txt"]),
    "predict --output naming a folder": (["predict", "--prompt", "x", "--output", "out"], {"out/keep.txt": ""},
                                         ["--output: out is a folder"]),
    "export --output naming a file": (["export", "--ckpt", "last", "--output", "model.bin"], {"model.bin": "x"},
                                      ["export --output: model.bin is a file"]),
    "export into a folder with files": (["export", "--ckpt", "last", "--output", "hf"], {"hf/pytorch_model.bin": "old"},
                                        ["export --output: hf is a folder with files in it"]),
    # runs
    "fit that trains no step": (["fit", "trainer.max_steps=0"], {}, ["trainer.max_steps=0 (in the command line)",
                                                                      "fit would train no step"]),
    "read-only run.root": (["fit", *TINY, "run.root=/sys/lmtemplate"], {},
                           ["run.root: cannot write /sys/lmtemplate/demo/version_0: Operation not permitted", "free on"]),
    "read-only run.cache_dir": (["fit", *TINY, "run.cache_dir=/sys/lmtemplate"], {},
                                ["cannot write /sys/lmtemplate", "Operation not permitted", "free on the disk of"]),
    # plugins
    "plugin with a syntax error": (["fit"], {"plugins/syn.py": "x = 1\ny = (\n"},
                                   ["could not load plugin file plugins/syn.py: SyntaxError", "syn.py, line 2"]),
    "plugin module that does not exist": (["fit", "plugins=[not_a_module]"], {},
                                          ["plugins: 'not_a_module' is not a file or folder", "nor a module"]),
    "plugin file that does not exist": (["fit", "plugins=[extra/mine.py]"], {}, ["plugins: file not found", "mine.py"]),
    "plugin task name collision": (["fit"], {"plugins/mine.py": plugin("causal_lm")},
                                   ["two tasks are registered under the name 'causal_lm'", "plugin file plugins/mine.py"]),
    "plugin with an invalid default": (["fit", "task=bad_default"], {"plugins/bad.py": BAD_DEFAULT},
                                       ["task 'bad_default' (plugin file plugins/bad.py)", "model.width: expected >= 1"]),
    "bigram plugin: unknown model key": (["fit", *BIGRAM, "model.n_layer=2"], "bigram",
                                         ["unknown key 'model.n_layer' in the command line", "block_size"]),
    "bigram plugin: empty .txt": (["fit", *BIGRAM, "data.train=empty.txt", "data.val=empty.txt"], "bigram",
                                  ["data.train (empty.txt)", "model.block_size=64"]),
    "bigram plugin: non-UTF-8 .txt": (["fit", *BIGRAM, "data.train=latin.txt"], "bigram",
                                      ["latin.txt, line 1: not valid UTF-8 (byte 0xe9 at byte offset 6"]),
    # configs and plugins that loaded quietly wrong, hung, or ended in a traceback
    "key twice in a config file": (["fit", "-c", "twice.yaml"],
                                   {"twice.yaml": "trainer:\n  max_steps: 5\nmodel:\n  n_layer: 1\ntrainer:\n  devices: 1\n"},
                                   ["twice.yaml: key 'trainer' appears twice in one mapping, at lines 1 and 5"]),
    "YAML alias bomb": (["config", "-c", "bomb.yaml"], {"bomb.yaml": ALIAS_BOMB},
                        ["bomb.yaml: the document expands to more than 10,000 values"]),
    "non-UTF-8 config file": (["fit", "-c", "latin.yaml"], {"latin.yaml": b"run:\n  name: caf\xe9\n"},
                              ["latin.yaml, line 2: not valid UTF-8 (byte 0xe9 at byte offset 16 of the file)"]),
    "run.name outside run.root": (["fit", "run.name=../../x"], {}, ["run.name: '../../x' is not a run name"]),
    "absolute run.name": (["fit", "run.name=/tmp/x"], {}, ["run.name: '/tmp/x' is not a run name"]),
    "run.name longer than a file name": (["fit", "run.name=" + "x" * 300], {},
                                         ["run.name: 'xxx", "each at most 255 bytes"]),
    "plugin calling sys.exit": (["fit"], {"plugins/quit.py": "import sys\n\nsys.exit(0)\n"},
                                ["could not load plugin file plugins/quit.py: SystemExit: 0", "quit.py, line 3)"]),
    "plugin raising KeyboardInterrupt": (["fit"], {"plugins/stop.py": "raise KeyboardInterrupt\n"},
                                         ["could not load plugin file plugins/stop.py: KeyboardInterrupt", "stop.py, line 1)"]),
    "nan learning rate": (["fit", "optim.lr=nan"], {}, ["optim.lr: expected a finite number, got nan (in the command line)"]),
    "zero learning rate": (["fit", "optim.lr=0"], {}, ["optim.lr: expected a positive learning rate, got 0.0"]),
    "trainer number YAML reads as text": (["fit", "-c", "t.yaml"], {"t.yaml": "trainer:\n  max_steps: 1e3\n"},
                                          ["trainer.max_steps: expected int, got '1e3' (in t.yaml)", "write 1000"]),
    # Hugging Face folders (model.init_from) and the Llama family's options
    "init_from: unsupported architecture": (["fit", "model.init_from=hf"], {"hf/config.json": '{"model_type": "falcon"}'},
                                            ["model.init_from: hf/config.json has model_type 'falcon'", "llama"]),
    "init_from: unsupported rope scaling": (
        ["fit", "model.init_from=hf"], {"hf/config.json": llama_json(rope_scaling={"rope_type": "yarn", "factor": 4.0})},
        ['model.init_from: hf/config.json: rope_type="yarn" (supported: "default" or "llama3")']),
    "init_from: sliding window shorter than the block": (
        ["fit", "model.init_from=hf"], {"hf/config.json": llama_json(model_type="mistral", sliding_window=16)},
        ["hf/config.json has sliding_window=16", "set model.block_size to 16 or less (it is 64)"]),
    "causal_lm: model.n_kv_head not dividing n_head": (["fit", "model.n_kv_head=3"], {},
                                                        ["model.n_kv_head: expected a divisor of model.n_head (4)"]),
    "causal_lm: unsupported model.rope_scaling": (["fit", "model.rope_scaling={rope_type: yarn, factor: 4.0}"], {},
                                                  ["model.rope_scaling: rope_type 'yarn' is not supported"]),
    # sweeps and the runs table
    "sweep: unknown key in the section": (["sweep", "-c", "s.yaml"], {"s.yaml": "sweep:\n  methd: tpe\n"},
                                          ["unknown key 'sweep.methd' in s.yaml", "method"]),
    "sweep: unknown key in parameters": (
        ["sweep", "-c", "s.yaml"], {"s.yaml": "sweep:\n  parameters:\n    model.n_layr: [1, 2]\n"},
        ["sweep.parameters: model.n_layr: the value 1 (in s.yaml)", "unknown key 'model.n_layr'", "n_layer"]),
    "sweep: value of the wrong type": (
        ["sweep", "-c", "s.yaml"], {"s.yaml": "sweep:\n  parameters:\n    model.n_layer: [2, abc]\n"},
        ["sweep.parameters: model.n_layer: the value 'abc'", "could not be converted to Integer"]),
    "sweep: empty list": (["sweep", "-c", "s.yaml"], {"s.yaml": "sweep:\n  parameters:\n    model.n_layer: []\n"},
                          ["sweep.parameters.model.n_layer: no values to try", "(in s.yaml)"]),
    "sweep: distribution with low > high": (
        ["sweep", "-c", "s.yaml", "sweep.method=random", "sweep.trials=4"],
        {"s.yaml": "sweep:\n  parameters:\n    optim.lr: loguniform(1e-3, 1e-5)\n"},
        ["sweep.parameters.optim.lr: loguniform(1e-3, 1e-5): expected low <= high", "(in s.yaml)"]),
    "sweep: grid with trials": (["sweep", "-c", "s.yaml", "sweep.trials=4"], {"s.yaml": "sweep:\n  seeds: [1, 2]\n"},
                                ["sweep.trials: grid tries every point", "(in the command line)"]),
    "sweep: storage that cannot be opened": (
        ["sweep", "-c", "s.yaml", "sweep.storage=sqlite:////no/such/dir/study.db"],
        {"s.yaml": "sweep:\n  seeds: [1]\n"},
        ["sweep.storage: cannot open the study at 'sqlite:////no/such/dir/study.db'"]),
    "sweep: a run.* parameter": (["sweep", "-c", "s.yaml"], {"s.yaml": "sweep:\n  parameters:\n    run.seed: [1, 2]\n"},
                                 ["sweep.parameters: run.seed: run.* says where a run lives; seeds go in sweep.seeds"]),
    "sweep: a seed twice": (["sweep", "-c", "s.yaml"], {"s.yaml": "sweep:\n  seeds: [1, 1]\n"},
                            ["sweep.seeds: expected one or more different seeds, got [1, 1] (in s.yaml)"]),
    "runs: a folder with no runs": (["runs", "empty"], {"empty/notes.txt": "not a run\n"},
                                    ["runs: no runs under empty"]),
    # training extras: ema, checkpoint.keep, early stopping, average
    "ema.decay out of range": (["fit", "ema.decay=1.5"], {}, ["ema.decay: expected a number in [0, 1) or null (off), got 1.5"]),
    "ema.averaged_in names no verb": (["fit", "ema.averaged_in=[train]"], {}, ["ema.averaged_in: train is not among validate"]),
    "ema under FSDP": (["fit", "ema.decay=0.9", "trainer.strategy=fsdp"], {}, ["ema.decay: the average of the weights",
                                                                               "FSDP"]),
    "checkpoint.keep negative": (["fit", "checkpoint.keep=-1"], {}, ["checkpoint.keep: expected a number >= 0, got -1"]),
    "checkpoint.every negative": (["fit", "checkpoint.keep=2", "checkpoint.every=-5"], {},
                                  ["checkpoint.every: expected a number >= 0, got -5"]),
    "best.patience not positive": (["fit", "best.patience=0"], {}, ["best.patience: expected a positive integer, got 0"]),
    "best.min_delta negative": (["fit", "best.min_delta=-1"], {}, ["best.min_delta: expected >= 0, got -1"]),
    "average: not last:N or best:N": (["average", "--ckpt", "last"], KEPT_RUN, ["--ckpt last: average takes last:N or best:N"]),
    "average with -c": (["average", "-c", "a.yaml", "--ckpt", "last:2"], {},
                        ["average: the checkpoints are the run's", "drop -c"]),
    "average: more than kept": (["average", "--ckpt", "last:2"], KEPT_RUN,
                                ["--ckpt last:2: outputs/demo/version_0/checkpoints has 1 kept checkpoints",
                                 "checkpoint.keep=2"]),
    "average: best:N without scores": (["average", "--ckpt", "best:1"], KEPT_RUN,
                                       ["--ckpt best:1: 0 of the kept checkpoints", "record val/loss"]),
    "average: different shapes": (["average", "--ckpt", "last:2"],
                                  {**KEPT_RUN, KEPT + "step-9.ckpt": kept_checkpoint(9, shape=(3,))},
                                  ["average: 'w' is (2,) torch.float32 in " + KEPT + "step-5.ckpt but (3,)"]),
    "average: different tasks": (["average", "--ckpt", "last:2"], {**KEPT_RUN, KEPT + "step-9.ckpt": kept_checkpoint(9, "qa")},
                                 ["are of different tasks (causal_lm, qa)"]),
    # low-rank adapters
    "lora: rank 0": (["fit", "lora.rank=0"], {}, ["lora.rank: expected a positive integer, got 0"]),
    "lora: a target that matches no projection": (
        ["fit", "lora.rank=4", "lora.targets=[q,query]"], {},
        ["lora.targets: 'query' matches no projection of this GPT", "its projections are down, k, o, q, up, v"]),
    "lora: no base": (["fit", "lora.rank=4"], {}, ["lora.rank=4: adapters train on a frozen pretrained base",
                                                   "model.init_from, the base, is not set"]),
}
BIGRAM_FILES = {"empty.txt": "", "latin.txt": LATIN1}


def run_files(root: Path) -> set[str]:
    """Every path under outputs/ except the shared cache: what runs leave behind."""
    outputs = root / "outputs"
    return {str(p.relative_to(outputs)) for p in outputs.rglob("*") if p.relative_to(outputs).parts[0] != "cache"}


def write_files(root: Path, files: dict) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def bigram_files(root: Path) -> dict:
    shutil.copytree(REPO / "configs" / "plugins", root / "configs" / "plugins")
    (root / "plugins").mkdir()
    shutil.copy(REPO / "plugins" / "bigram_lm.py", root / "plugins")
    return BIGRAM_FILES


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    return tmp_path


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_a_clear_error_without_a_run_directory(cwd, capsys, case):
    argv, files, expected = CASES[case]
    write_files(cwd, bigram_files(cwd) if files == "bigram" else files)
    before = run_files(cwd)
    assert main(argv) == EXIT_CONFIG == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("lmtemplate: error: ")
    for part in expected:
        assert part in err, err
    assert run_files(cwd) == before


def test_a_bad_plugin_default_breaks_only_its_own_task(cwd, capsys):
    write_files(cwd, {"plugins/bad.py": BAD_DEFAULT})
    assert main(["tasks"]) == 0
    assert "bad_default" in capsys.readouterr().out
    assert main(["config", "task=masked_lm"]) == 0
    assert "task: masked_lm" in capsys.readouterr().out


def test_a_fit_failing_before_its_first_checkpoint_leaves_no_run_directory(cwd, capsys):
    """The error comes from the first training step, after the run directory, config and tokenizer were written."""
    write_files(cwd, {"plugins/failing.py": plugin("failing", body='raise ConfigError("model.width: too wide to train")')})
    assert main(["fit", "task=failing", *TINY[4:]]) == 2
    assert "model.width: too wide to train" in capsys.readouterr().err
    assert run_files(cwd) == set()


def test_a_failing_fit_leaves_a_directory_it_did_not_create(cwd, capsys):
    write_files(cwd, {"plugins/failing.py": plugin("failing", body='raise ConfigError("model.width: too wide to train")'),
                      "outputs/demo/version_0/notes.txt": "mine\n"})
    assert main(["fit", "task=failing", "run.version=0", *TINY[4:]]) == 2
    assert (cwd / "outputs/demo/version_0/notes.txt").read_text() == "mine\n"


# Bad commands on a trained run (tiny, 2 steps, then one prediction): each exits 2 before changing any file of it.
RUN_CASES = {
    "fit into an existing run.version": (["fit", *TINY, "run.version=0"], {},
                                         ["run.version=0: outputs/demo/version_0 exists", "--ckpt last"]),
    "resume with another model shape": (["fit", "--ckpt", "last", "model.n_embd=32"], {},
                                        ["model.tok_emb.weight is [300, 16] in the checkpoint but [300, 32] in the config's model",
                                         "The run was trained with model.n_embd=16", "this command sets model.n_embd=32"]),
    "validate with another depth": (["validate", "--ckpt", "last", "model.n_layer=2"], {},
                                    ["the model has", "tensors the checkpoint lacks (model.blocks.1.", "model.n_layer=1"]),
    "checkpoint of a run without config.yaml": (["validate", "--ckpt", "last", "run.name=demo"], {"-config.yaml": ""},
                                                ["is [300, 16] in the checkpoint but", "has no config.yaml to compare"]),
    "predict an empty --input file": (["predict", "--ckpt", "last", "--input", "empty.txt"], {"empty.txt": ""},
                                      ["--input empty.txt: no inputs", "predictions.jsonl is unchanged"]),
    "predict --question on a causal_lm run": (["predict", "--ckpt", "last", "--question", "q", "--context", "c"], {},
                                              ["predict --question: a causal_lm run reads its inputs from --prompt or --input"]),
    "export into the run directory": (["export", "--ckpt", "last", "--output", "outputs/demo/version_0"], {},
                                      ["outputs/demo/version_0 is a folder with files in it"]),
    "export --adapter of a run without adapters": (["export", "--ckpt", "last", "--output", "out", "--adapter"], {},
                                                   ["export --adapter: this run has no adapters (lora.rank is unset"]),
}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under outputs/ but the shared cache, with its bytes."""
    return {p: (root / "outputs" / p).read_bytes() for p in run_files(root) if (root / "outputs" / p).is_file()}


def assert_refused(cwd: Path, capsys, argv: list[str], expected: list[str]) -> None:
    """``argv`` exits 2 with one message holding every ``expected`` part, and no file under outputs/ changed."""
    before = snapshot(cwd)
    capsys.readouterr()
    assert main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("lmtemplate: error: ")
    for part in expected:
        assert part in err, err
    after = snapshot(cwd)
    assert after == before, set(after) ^ set(before)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as m:
        m.chdir(root)
        torch.set_num_threads(1)
        assert main(["fit", *TINY]) == 0
        assert main(["predict", "--ckpt", "last", "--prompt", "the"]) == 0
    return root / "outputs"


@pytest.mark.parametrize("case", list(RUN_CASES), ids=list(RUN_CASES))
def test_bad_command_on_a_run_changes_nothing_in_it(cwd, capsys, trained_run, case):
    argv, files, expected = RUN_CASES[case]
    shutil.copytree(trained_run, cwd / "outputs")
    for name in [n for n in files if n.startswith("-")]:
        (cwd / "outputs/demo/version_0" / name[1:]).unlink()
    write_files(cwd, {n: c for n, c in files.items() if not n.startswith("-")})
    assert_refused(cwd, capsys, argv, expected)


def test_a_fit_on_a_run_another_fit_holds_is_refused(cwd, capsys, trained_run):
    """Two fits of one run directory (a requeued job beside its first copy, two sweep workers) would interleave
    their checkpoints: the second is refused while the first holds the directory."""
    import fcntl

    shutil.copytree(trained_run, cwd / "outputs")
    with open(cwd / "outputs/demo/version_0/.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on elsewhere\n")
        held.flush()
        assert main(["fit", "--ckpt", "last", "trainer.max_steps=4"]) == EXIT_CONFIG
    assert "outputs/demo/version_0 is being trained by another fit (pid 4242 on elsewhere)" in capsys.readouterr().err
    assert main(["fit", "--ckpt", "last", "trainer.max_steps=4"]) == 0  # released: it resumes


def test_a_full_disk_while_saving_a_checkpoint_is_a_clear_error(cwd, capsys, monkeypatch):
    import errno

    import lmtemplate.checkpointing as checkpointing

    def full(obj, f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", full)
    assert main(["fit", *TINY]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "cannot write " in err and "outputs/demo/version_0/checkpoints/" in err and "No space left on device" in err
    assert "it needs about" in err and "MiB free on the disk of" in err
    assert run_files(cwd) == set()  # the fit had no checkpoint: its run directory is gone, and no temporary is left


# A LoRA run (adapters on the trained tiny run, its base) whose base is gone or was replaced by another shape's run:
# each command on it exits 2 and changes no file of it.
LORA_RUN_CASES = {
    "LoRA run whose base is gone": (["validate", "--ckpt", "last", "run.name=lora"], "gone",
                                    ["model.init_from, the base, is not there: outputs/demo/version_0"]),
    "LoRA run whose base has another shape": (
        ["validate", "--ckpt", "last", "run.name=lora"], "reshaped",
        ["parameter 'tok_emb.weight' has shape (300, 32) in outputs/demo/version_0/checkpoints/last.ckpt but (300, 16)",
         "With lora.rank=2 that base is frozen and a checkpoint holds only the adapters"]),
}


@pytest.fixture(scope="module")
def lora_run(trained_run, tmp_path_factory):
    """The trained run with a LoRA run on it, and a run of another width whose checkpoint replaces the base's."""
    root = tmp_path_factory.mktemp("lora")
    shutil.copytree(trained_run, root / "outputs")
    with pytest.MonkeyPatch.context() as m:
        m.chdir(root)
        assert main(["fit", *TINY, "run.name=lora", "model.init_from=outputs/demo/version_0", "lora.rank=2"]) == 0
        assert main(["fit", *TINY, "run.name=wider", "model.n_embd=32"]) == 0
    return root / "outputs"


@pytest.mark.parametrize("case", list(LORA_RUN_CASES), ids=list(LORA_RUN_CASES))
def test_bad_base_of_a_lora_run_is_a_clear_error(cwd, capsys, lora_run, case):
    argv, change, expected = LORA_RUN_CASES[case]
    shutil.copytree(lora_run, cwd / "outputs")
    base = cwd / "outputs/demo/version_0"
    if change == "gone":
        shutil.rmtree(base)
    else:
        shutil.copy(cwd / "outputs/wider/version_0/checkpoints/last.ckpt", base / "checkpoints/last.ckpt")
    assert_refused(cwd, capsys, argv, expected)


def test_docs_errors_md_lists_every_case():
    table = (REPO / "docs" / "errors.md").read_text(encoding="utf-8").splitlines()
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table if line.startswith("| ") and " --- " not in line]
    assert rows[1:] == list(CASES) + list(RUN_CASES) + list(LORA_RUN_CASES)  # rows[0] is the header
