"""Tokenizers: train from text files, load and save ``tokenizer.json`` (Hugging Face ``tokenizers``).

A trained tokenizer is cached under ``<cache_dir>/tokenizer-<hash>.json``,
the hash covering the content of the training files and the tokenizer
settings, so a second run on the same data skips training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Protocol, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from lmtemplate.checkpointing import init_source
from lmtemplate.config import ConfigError, read_utf8, utf8_file
from lmtemplate.files import atomic_write_text
from lmtemplate.models import hf

log = logging.getLogger(__name__)

KINDS = ("bpe", "wordpiece", "char")
UNKNOWN_CHAR = "<unk>"  # char tokenizers map characters unseen in training here
UNKNOWN_PIECE = "[UNK]"  # wordpiece tokenizers map words they cannot spell here


@dataclass
class TokenizerConfig:
    kind: str = "bpe"  # bpe: byte-level BPE (GPT-2); wordpiece: BERT's; char: one token per character seen in training
    vocab_size: int = 512  # bpe and wordpiece: a char vocabulary is the training text's characters + special tokens
    min_frequency: int = 2
    special_tokens: list[str] = field(default_factory=lambda: ["<|endoftext|>"])
    lowercase: bool = False  # wordpiece only: lower-case and strip accents first, as uncased BERT does
    path: Optional[str] = None  # load this tokenizer.json instead of training one

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"tokenizer.kind: '{self.kind}' is not one of {', '.join(KINDS)}")
        if self.path is not None and not Path(self.path).is_file():
            raise ConfigError(f"tokenizer.path: file not found: {self.path}")
        if self.kind == "bpe" and self.vocab_size < 257 + len(self.special_tokens):
            raise ConfigError(
                f"tokenizer.vocab_size: {self.vocab_size} is too small for byte-level BPE; "
                f"it needs at least 256 bytes + {len(self.special_tokens)} special tokens + 1"
            )
        if self.kind == "wordpiece" and UNKNOWN_PIECE not in self.special_tokens:
            raise ConfigError(f"tokenizer.special_tokens: a wordpiece tokenizer needs '{UNKNOWN_PIECE}' among them")


ENCODER_SPECIALS = ["[SEP]", "[CLS]", "[PAD]", "[MASK]", "[UNK]"]  # [SEP] first: it separates documents


@dataclass
class EncoderTokenizerConfig(TokenizerConfig):
    """The tokenizer section of encoder tasks: WordPiece with BERT's special tokens by default."""

    kind: str = "wordpiece"
    vocab_size: int = 2048
    special_tokens: list[str] = field(default_factory=lambda: list(ENCODER_SPECIALS))

    def __post_init__(self) -> None:
        super().__post_init__()
        missing = [t for t in ENCODER_SPECIALS if t not in self.special_tokens]
        if missing:
            raise ConfigError(f"tokenizer.special_tokens: an encoder needs {', '.join(missing)} among them")


CONTENT_HASH = "sha1"  # the fastest of hashlib's md5, sha1, sha256 and blake2b on the development CPU
DIGEST_BLOCK = 2**20  # file_digest reads files in blocks of this many bytes
INPUTS_RECORD = "inputs.json"  # in a cache folder: per kind of cache, each input file's path -> content at its last build


def content_hash():
    """A new hash of the kind caches are keyed on: a cache key, not a security check."""
    return hashlib.new(CONTENT_HASH, usedforsecurity=False)


def file_digest(path: Path) -> str:
    """The hash of a file's bytes, read in large blocks."""
    h = content_hash()
    with open(path, "rb") as f:
        while block := f.read(DIGEST_BLOCK):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(files: Iterable[Path]) -> list[tuple[str, str]]:
    """(resolved path, digest of the bytes) of each file: the content identifies a file, since a rewrite can keep its
    size and modification time (cp -p, rsync -t and tar keep times)."""
    return [(str(Path(f).resolve()), file_digest(f)) for f in files]


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_tokenizer(cfg: TokenizerConfig, texts: "TextSource", cache_dir: Path) -> Tokenizer:
    """Load ``cfg.path`` if set; else reuse a cached tokenizer for these inputs, or train one."""
    if cfg.path is not None:
        return load_tokenizer(Path(cfg.path))
    settings = {k: v for k, v in asdict(cfg).items() if k != "path"}
    cached = Path(cache_dir) / f"tokenizer-{digest(settings, texts.fingerprint())}.json"
    build_cache(cached, "tokenizer", texts.inputs, lambda: save_tokenizer(train_tokenizer(cfg, texts.iter_texts()), cached))
    return load_tokenizer(cached)


def build_cache(path: Path, kind: str, inputs: Sequence[tuple[str, str]], build: Callable[[], None]) -> None:
    """Reuse the ``kind`` cache ``path`` (its name covers the content of ``inputs``, (path, digest) pairs), or ``build()``
    it: first warning of each input whose content differs from what the last ``kind`` build in that folder read under
    its path, then recording what this build read."""
    if path.is_file():
        log.info("reusing the cached %s %s", kind, path)
        return
    last = _read_record(path.parent).get(kind, {})
    for file, content in inputs:
        if last.get(file, content) != content:
            log.warning("%s: its content changed since the cached %s was built from it; building a new %s", file, kind, kind)
    build()
    if not inputs:  # texts in memory
        return
    record = _read_record(path.parent)  # read again: another process may have written it during the build
    record.setdefault(kind, {}).update(inputs)
    atomic_write_text(path.parent / INPUTS_RECORD, json.dumps(record, indent=1, sort_keys=True))


def _read_record(cache_dir: Path) -> dict:
    """The inputs record of a cache folder; empty if there is none (or it is not JSON: it only feeds a warning)."""
    try:
        return json.loads((cache_dir / INPUTS_RECORD).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def train_tokenizer(cfg: TokenizerConfig, texts: Iterator[str]) -> Tokenizer:
    if cfg.kind == "char":
        return char_tokenizer(cfg, texts)
    if cfg.kind == "wordpiece":
        return wordpiece_tokenizer(cfg, texts)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(cfg.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def wordpiece_tokenizer(cfg: TokenizerConfig, texts: Iterator[str]) -> Tokenizer:
    """BERT's scheme: split on white space and punctuation, then words into '##'-continued pieces."""
    tok = Tokenizer(models.WordPiece(unk_token=UNKNOWN_PIECE))
    if cfg.lowercase:
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=list(cfg.special_tokens), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def char_tokenizer(cfg: TokenizerConfig, texts: Iterator[str]) -> Tokenizer:
    """Special tokens, then <unk>, then every character of the texts in sorted order."""
    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    symbols = [*cfg.special_tokens, UNKNOWN_CHAR, *sorted(chars - set(cfg.special_tokens) - {UNKNOWN_CHAR})]
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(symbols)}, unk_token=UNKNOWN_CHAR))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character alone
    tok.decoder = decoders.Fuse()  # join characters back without spaces
    tok.add_special_tokens(list(cfg.special_tokens))
    return tok


def document_separator(tok: Tokenizer) -> Optional[int]:
    """The id of [SEP] if the tokenizer has it (BERT's vocabulary puts [PAD] first), else of the first special
    token: it separates documents in a token file; None if there is none."""
    if tok.token_to_id("[SEP]") is not None:
        return tok.token_to_id("[SEP]")
    specials = sorted((i, t.content) for i, t in tok.get_added_tokens_decoder().items() if t.special)
    return specials[0][0] if specials else None


def start_end_ids(tok: Tokenizer, task: str) -> tuple[int, int]:
    """The (start, end) ids a generating task wraps sequences in: ``<s>`` / ``</s>``, else BERT's ``[CLS]`` /
    ``[SEP]`` (a masked_lm run's or a BERT checkpoint's WordPiece), else the first special token for both (a
    causal_lm run's ``<|endoftext|>``)."""
    for start, end in (("<s>", "</s>"), ("[CLS]", "[SEP]")):
        ids = tok.token_to_id(start), tok.token_to_id(end)
        if None not in ids:
            return ids
    separator = document_separator(tok)
    if separator is None:
        raise ConfigError(f"tokenizer: the tokenizer has no special token; {task} needs <s> and </s> "
                          "(tokenizer.special_tokens), [CLS] and [SEP], or one such as <|endoftext|>")
    return separator, separator


def resolve_tokenizer(cfg, run_dir: Optional[Path]) -> None:
    """Decide, once per run, which tokenizer it uses, by setting ``tokenizer.path``: the run's own (a checkpoint
    goes with its tokenizer), else the one ``tokenizer.path`` names, else that of the run ``model.init_from``
    names (a backbone reads only its own token ids), or the tokenizer.json (else vocab.txt) of the Hugging Face
    model it names; left unset, the datamodule trains one on its training text. With a tokenizer per side
    (translation's ``tokenizer.joint=false``) the pretrained encoder's goes to ``tokenizer.source_path`` instead."""
    tok, model = getattr(cfg, "tokenizer", None), getattr(cfg, "model", None)
    if not isinstance(tok, TokenizerConfig):
        return
    own = run_dir / "tokenizer.json" if run_dir is not None else None
    init_from = getattr(model, "init_from", None)
    if own is not None and own.is_file():
        tok.path = str(own)
    elif getattr(tok, "joint", True) is False:  # translation with a tokenizer per side: the encoder's is the source's
        if tok.source_path is None and init_from:
            tok.source_path = init_tokenizer(init_from)
    elif tok.path is None and init_from:
        tok.path = init_tokenizer(init_from)


KIND_OF_MODEL = {"BPE": "bpe", "WordPiece": "wordpiece", "WordLevel": "char"}  # the tokenizers library's model -> kind


def describe_tokenizer(path: Path) -> dict:
    """The ``tokenizer`` settings that describe a tokenizer file: its kind, vocabulary size and special tokens
    (empty for a kind lmtemplate does not train)."""
    tok = load_tokenizer(path)
    kind = KIND_OF_MODEL.get(type(tok.model).__name__)
    if kind is None:
        return {}
    special = [t.content for _, t in sorted(tok.get_added_tokens_decoder().items()) if t.special]
    return {"kind": kind, "vocab_size": tok.get_vocab_size(), "special_tokens": special}


def init_tokenizer(init_from: str) -> str:
    """The tokenizer a pretrained backbone reads: a Hugging Face model's tokenizer.json (else vocab.txt), or the
    tokenizer.json of the run ``init_from`` names."""
    if hf.is_pretrained_dir(init_from):
        found = [p for p in (Path(init_from) / "tokenizer.json", Path(init_from) / "vocab.txt") if p.is_file()]
        if not found:
            raise ConfigError(f"model.init_from: {init_from} has neither tokenizer.json nor vocab.txt; "
                              "set tokenizer.path to the tokenizer it was trained with")
        return str(found[0])
    checkpoint, init_run = init_source(init_from)
    found = init_run / "tokenizer.json" if init_run else None
    if found is None or not found.is_file():
        raise ConfigError(f"model.init_from: {checkpoint} is not inside a run directory with a tokenizer.json; "
                          "set tokenizer.path to the tokenizer it was trained with")
    return str(found)


def load_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer.json, or a BERT vocab.txt; without the padding and truncation a Hugging Face tokenizer.json may
    set for every encoding (the data readers pad and truncate themselves)."""
    if Path(path).name == "vocab.txt":
        return vocab_tokenizer(Path(path))
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise ConfigError(f"{path}: not a tokenizer.json file that the tokenizers library can load ({e})") from None
    tok.no_padding()
    tok.no_truncation()
    return tok


def vocab_tokenizer(path: Path) -> Tokenizer:
    """BERT's WordPiece tokenizer from its vocab.txt (one piece a line, the line number its id), cased or uncased as
    the tokenizer_config.json next to it says (``do_lower_case``, true when absent, as for BertTokenizer)."""
    with utf8_file(path) as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    if UNKNOWN_PIECE not in vocab:
        raise ConfigError(f"{path}: a WordPiece vocabulary needs an {UNKNOWN_PIECE} line")
    settings_file = path.with_name("tokenizer_config.json")
    settings = json.loads(read_utf8(settings_file)) if settings_file.is_file() else {}
    lowercase = settings.get("do_lower_case", True)
    strip_accents = settings.get("strip_accents")
    tok = Tokenizer(models.WordPiece(vocab, unk_token=UNKNOWN_PIECE))
    tok.normalizer = normalizers.BertNormalizer(
        lowercase=lowercase, strip_accents=lowercase if strip_accents is None else strip_accents,
        handle_chinese_chars=settings.get("tokenize_chinese_chars", True))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens([t for t in ENCODER_SPECIALS if t in vocab])
    return tok


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    atomic_write_text(Path(path), tok.to_str(pretty=True))


class TextSource(Protocol):
    """The protocol ``build_tokenizer`` needs from a corpus (see ``lmtemplate.data.corpus``)."""

    inputs: Sequence[tuple[str, str]]  # file_fingerprint of the files the texts come from; empty for texts in memory

    def fingerprint(self) -> object: ...

    def iter_texts(self) -> Iterator[str]: ...
