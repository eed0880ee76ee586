"""What every datamodule shares: its splits, the demo fallback, resumable rank-sharded loaders, padding
(``ExampleData``'s hooks are the contract; docs/writing-a-task.md walks through them)."""

from __future__ import annotations

import functools
import random
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator, Optional

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Sampler

from lmtemplate.config import ConfigError, require_positive
from lmtemplate.tokenization import build_tokenizer, content_hash, document_separator

SPLITS = ("train", "val", "test")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}  # Lightning's stages
IGNORE = -100  # the label of positions a loss skips (torch's cross_entropy default ignore_index)


@dataclass
class SplitsConfig:
    """The ``data`` keys every file-based task has."""

    train: Optional[str] = None  # a file; None: the task's built-in demo data (for every split)
    val: Optional[str] = None  # required with train
    test: Optional[str] = None  # None: the validation file
    batch_size: int = 32
    batch_tokens: int = 0  # > 0: training batches of similar-length examples with up to this many padded tokens
    num_workers: int = 0
    demo_train: int = 3000  # examples of the built-in demo data, when there is no data.train
    demo_val: int = 300
    demo_seed: int = 0
    formats: ClassVar[str] = "a .tsv, .csv or .jsonl file"  # what a split key names, for messages

    def __post_init__(self) -> None:
        if self.train is not None and self.val is None:
            raise ConfigError("data.val: a validation set is required when data.train is set")
        require_positive("data", self, "batch_size")
        if self.batch_tokens < 0:
            raise ConfigError(f"data.batch_tokens: expected 0 (batches of data.batch_size) or a positive number of "
                              f"tokens, got {self.batch_tokens}")

    def check_files(self, splits: Iterable[str]) -> None:
        """The files of these splits exist. A verb checks those it reads when its config is loaded (fit: every split),
        so that a run can still be evaluated, exported or averaged after its training file moved."""
        for split in splits if self.train is not None else ():  # the demo data has every split
            key = split if split != "test" or self.test else "val"
            for path in self.paths(getattr(self, key)):
                if not path.is_file():
                    raise ConfigError(f"data.{key}: file not found: {path} ({self.formats}; relative to {Path.cwd()})")

    def paths(self, spec: Optional[str]) -> list[Path]:
        """The files a split key names."""
        return [] if spec is None else [Path(spec)]

    def files(self) -> dict[str, str]:
        return {"train": self.train, "val": self.val, "test": self.test or self.val}


class ShardedSampler(Sampler[int]):
    """Items of one epoch for one rank: an order fixed by (seed, epoch), every ``world_size``-th item, resumable.

    ``resume(epoch, skip)`` makes the next pass of that epoch start ``skip`` items in,
    so a resumed run sees exactly the items an uninterrupted run would.
    Evaluation (``shuffle=False``) pads the order by repeating its start, so every rank has as many items.
    """

    def __init__(self, n_items: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n_items, self.shuffle, self.seed, self.rank, self.world_size = n_items, shuffle, seed, rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def resume(self, epoch: int, skip: int) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.n_items // self.world_size if self.shuffle else -(-self.n_items // self.world_size)

    def order(self, g: torch.Generator) -> torch.Tensor:
        """Every item of the epoch, in its order (a permutation of the indices when shuffled)."""
        return torch.randperm(self.n_items, generator=g) if self.shuffle else torch.arange(self.n_items)

    def __iter__(self) -> Iterator[int]:
        order = self.order(torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        if not self.shuffle and len(order):
            order = order.repeat(-(-len(self) * self.world_size // len(order)))
        mine = order[self.rank : len(self) * self.world_size : self.world_size]
        skip, self.skip = self.skip, 0
        return map(int, mine[skip:].numpy())  # 8 bytes an item until used, not a list of Python ints


class TokenBatches(ShardedSampler):
    """Training batches of similar-length examples, each at most ``max_tokens`` padded tokens (all sizes summed).

    Each pass sorts the examples by length (ties broken at random), cuts them into batches and shuffles the batches,
    with a new seed every pass (epoch); rank r of w takes every w-th batch. Only the tie-breaking and order change
    between passes, so the number of batches is the same in every one.
    """

    def __init__(self, sizes: list[tuple[int, ...]], max_tokens: int, seed: int, rank: int = 0, world: int = 1):
        super().__init__(len(sizes), True, seed, rank, world)
        self.sizes, self.max_tokens = sizes, max_tokens

    def batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed + epoch)
        batches, widths = [[]], None  # widths: the last batch's longest of each size
        for i in sorted(range(len(self.sizes)), key=lambda j: (sum(self.sizes[j]), rng.random())):
            widths = self.sizes[i] if widths is None else tuple(map(max, widths, self.sizes[i]))
            if batches[-1] and sum(widths) * (len(batches[-1]) + 1) > self.max_tokens:
                batches.append([])
                widths = self.sizes[i]
            batches[-1].append(i)
        rng.shuffle(batches)
        return batches[self.rank: len(batches) // self.world_size * self.world_size or len(batches): self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        """This epoch's batches (after the skipped ones of a resumed epoch); the next pass is the next epoch."""
        batches = self.batches(self.epoch)[self.skip:]
        self.epoch, self.skip = self.epoch + 1, 0
        return iter(batches)

    def __len__(self) -> int:
        return len(self.batches(0))


class ResumableLoader(DataLoader):
    """A training DataLoader whose position Lightning saves in checkpoints and restores on resume.

    The state is the epoch and the batches the model has learned from in it, read
    from the trainer's progress, so loader workers running ahead do not count.
    """

    def __init__(self, *args, progress=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict:
        return self.progress()

    def load_state_dict(self, state: dict) -> None:
        skip = state["batches"] if self.batch_size is None else state["batches"] * self.batch_size
        (self.batch_sampler if self.batch_size is None else self.sampler).resume(state["epoch"], skip)


def worker_init(worker_id: int) -> None:
    """Loader workers ignore Ctrl-C and SIGTERM: the main process saves a checkpoint, then stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pl_worker_init_function(worker_id)  # Lightning's per-worker seeding, which this function replaces


def pad(rows: list[dict], pad_values: dict[str, int]) -> dict:
    """Collate examples (dicts): lists of ints are padded to the longest (``pad_values[key]``, else 0), with an
    ``attention_mask`` beside ``input_ids``; numbers become tensors; anything else stays a list."""
    batch: dict = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if isinstance(values[0], list) and (not values[0] or isinstance(values[0][0], int)):
            width = max(map(len, values))
            out = torch.full((len(values), width), pad_values.get(key, 0), dtype=torch.long)
            for i, v in enumerate(values):
                out[i, : len(v)] = torch.tensor(v, dtype=torch.long)
            batch[key] = out
            if key == "input_ids":
                batch["attention_mask"] = (torch.arange(width)[None] < torch.tensor([len(v) for v in values])[:, None]).long()
        elif isinstance(values[0], (int, float)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


class DataModule(L.LightningDataModule):
    """Loaders for any task: ``loader`` shards by rank, shuffles per epoch and resumes mid-epoch in training."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.predict_inputs: list = []  # set by ``predict``: what the task's ``read_predict_inputs`` returned

    def rank(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def _progress(self) -> dict:
        loop = self.trainer.fit_loop
        return {"epoch": loop.epoch_progress.current.processed, "batches": loop.epoch_loop.batch_progress.current.processed}

    def loader(self, dataset, train: bool, collate_fn=None, sampler: Optional[Sampler] = None,
               batch_sampler: Optional[Sampler] = None) -> DataLoader:
        """A DataLoader over ``dataset`` (default sampler: a ``ShardedSampler`` of its items); in training, the
        last partial batch of an epoch is dropped (unless it would be the only one) and the loader resumes."""
        d = self.cfg.data
        rank, world = self.rank()
        if batch_sampler is None and sampler is None:
            if train and len(dataset) < world:
                raise ConfigError(f"the training data holds {len(dataset)} examples: fewer than the {world} processes")
            sampler = ShardedSampler(len(dataset), shuffle=train, seed=self.cfg.run.seed, rank=rank, world_size=world)
        options = dict(collate_fn=collate_fn, num_workers=d.num_workers, persistent_workers=d.num_workers > 0,
                       worker_init_fn=worker_init)
        if batch_sampler is None:
            options.update(sampler=sampler, batch_size=d.batch_size, drop_last=train and len(sampler) >= d.batch_size)
        else:
            options.update(batch_sampler=batch_sampler)
        if train:
            return ResumableLoader(dataset, progress=self._progress, **options)
        # Each pass over a loader draws its workers' base seed from the loader's generator, else from torch's global
        # one, which also draws training's dropout masks: evaluation's own generator keeps training the same however
        # often it validates.
        return DataLoader(dataset, generator=torch.Generator().manual_seed(self.cfg.run.seed), **options)


class Texts:
    """Texts as ``build_tokenizer`` reads a corpus; fingerprinted by their content. ``read()`` gives them, called
    only when a tokenizer is trained (one loaded from ``tokenizer.path`` needs no training data)."""

    inputs = ()  # texts in memory: no file to name when the content changes

    def __init__(self, read: Callable[[], Iterable[str]]):
        self.read = read

    @functools.cached_property
    def texts(self) -> list[str]:
        return list(self.read())

    def fingerprint(self) -> object:
        h = content_hash()
        for t in self.texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()

    def iter_texts(self) -> Iterator[str]:
        return iter(self.texts)


class Splits(dict):
    """split -> value, made by ``make(split)`` when first asked for."""

    def __init__(self, make: Callable[[str], list]):
        super().__init__()
        self.make = make

    def __missing__(self, split: str) -> list:
        self[split] = value = self.make(split)
        return value


class ExampleData(DataModule):
    """Examples from files (or the demo), each split read and encoded once, when first used; batches padded to
    their longest example.

    Subclasses write the hooks below; ``self.rows[split]`` is what ``read`` returned for the split's file and
    ``self.examples[split]`` what ``encode`` made of it. A verb reads only its splits (``setup(stage)``: fit
    train and val, validate val, test test, predict none); the training file is read for the tokenizer only when
    one is trained (``tokenizer.path`` unset), or for what the task learns from it (``of_training``) when no
    checkpoint recorded that.
    """

    pad_values: dict[str, int] = {}  # key -> pad value; input_ids pad with the tokenizer's padding token

    def __init__(self, cfg):
        super().__init__(cfg)
        self.rows = Splits(self._read)
        self.examples = Splits(self._encode)
        self.recorded: dict = {}  # the checkpoint that validate / test / predict evaluate (``of_training``)
        texts = Texts(lambda: self.texts(self.rows["train"]))
        self.tokenizer = build_tokenizer(cfg.tokenizer, texts, Path(cfg.run.cache_dir))
        self.pad_id = next((i for i in (self.tokenizer.token_to_id(t) for t in ("[PAD]", "<pad>")) if i is not None), 0)

    def of_training(self, key: str, compute: Callable[[list], object]) -> object:
        """A fact of the training file that the task is built on (the label names, whether some question has no
        answer): as the checkpoint being evaluated recorded it under ``key`` (``on_save_checkpoint``), so that
        validate, test and predict never read the training file; else ``compute(self.rows["train"])``."""
        return self.recorded[key] if key in self.recorded else compute(self.rows["train"])

    def _read(self, split: str) -> list:
        """A split's rows: the demo's (every split at once), or its file's, read once for the splits that share it.
        An exception from ``read`` other than ``ConfigError`` becomes one that names the file."""
        if self.cfg.data.train is None:
            demo = self.demo()
            self.rows.update({k: v for k, v in demo.items() if k != split})
            return demo[split]
        files = self.cfg.data.files()
        same = next((k for k in self.rows if files[k] == files[split]), None)
        if same:
            return self.rows[same]
        try:
            return self.read(Path(files[split]))
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"{files[split]} (data.{split}): {type(self).__name__}.read failed: "
                              f"{type(e).__name__}: {e} (--debug shows the traceback)") from e

    def _encode(self, split: str) -> list:
        """A split's examples; an evaluation split that shares its rows with another one is encoded once."""
        rows = self.rows[split]
        same = next((k for k in self.examples if "train" not in (k, split) and self.rows[k] is rows), None)
        return self.examples[same] if same else self.encode(rows, split)

    def setup(self, stage: str) -> None:
        """Read and encode the splits of Lightning's ``stage`` now, so their errors come before any step."""
        for split in STAGE_SPLITS[stage]:
            self.examples[split]

    def demo(self) -> dict[str, list]:
        """The built-in demo rows for every split (``data.train`` unset)."""
        raise ConfigError(f"data.train: {type(self).__name__} has no built-in demo data; set data.train and data.val")

    def read(self, path: Path) -> list:
        """The rows of one data file; errors name the file and line."""
        raise NotImplementedError

    def texts(self, rows: list) -> Iterator[str]:
        """The texts of the training rows, which a new tokenizer is trained on (default: every string value)."""
        return (value for row in rows for value in row.values() if isinstance(value, str))

    def encode(self, rows: list, split: str) -> list[dict]:
        """Rows -> examples, dicts of token-id lists and numbers (``split`` may be ``predict``)."""
        raise NotImplementedError

    def collate(self, rows: list[dict]) -> dict:
        return pad(rows, {"input_ids": self.pad_id, **self.pad_values})

    def sizes(self, examples: list) -> list[tuple[int, ...]]:
        """What ``data.batch_tokens`` counts of each example: its ``input_ids`` (and ``decoder_input_ids``)."""
        return [(len(e["input_ids"]), len(e.get("decoder_input_ids", ()))) for e in examples]

    def train_dataloader(self) -> DataLoader:
        examples, budget = self.examples["train"], self.cfg.data.batch_tokens
        batches = TokenBatches(self.sizes(examples), budget, self.cfg.run.seed, *self.rank()) if budget else None
        return self.loader(examples, train=True, collate_fn=self.collate, batch_sampler=batches)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.examples["val"], train=False, collate_fn=self.collate)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.examples["test"], train=False, collate_fn=self.collate)

    def predict_dataloader(self) -> DataLoader:
        return self.loader(self.encode(self.predict_inputs, "predict"), train=False, collate_fn=self.collate)


def encode_texts(tokenizer: Tokenizer, texts: list[str], pairs: Optional[list[str]], max_length: int) -> list[dict]:
    """``input_ids`` and ``token_type_ids`` per text (or text pair), cut to ``max_length`` (the longer text first).

    Encoder tokenizers (with ``[CLS]`` and ``[SEP]``) give ``[CLS] a [SEP] b [SEP]``, token types 0 then 1;
    others (a GPT's) ``a <sep> b <sep>`` with their document separator, so a decoder's last token has read all.
    """
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    encoder = cls is not None and sep is not None
    sep = sep if encoder else document_separator(tokenizer)
    ends = [] if sep is None else [sep]
    first = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    second = [e.ids for e in tokenizer.encode_batch(pairs, add_special_tokens=False)] if pairs else [None] * len(texts)
    out = []
    for a, b in zip(first, second):
        room = max_length - (1 if encoder else 0) - len(ends) * (1 if b is None else 2)
        a, b = list(a), (None if b is None else list(b))
        while len(a) + len(b or []) > room:
            (a if b is None or len(a) >= len(b) else b).pop()
        ids = ([cls] if encoder else []) + a + ends
        types = [0] * len(ids)
        if b is not None:
            ids += b + ends
            types += [1] * (len(b) + len(ends))
        out.append({"input_ids": ids, "token_type_ids": types})
    return out
