import json
import logging
import os
import shutil

import numpy as np
import pytest

from lmtemplate.config import ConfigError
from lmtemplate.data.corpus import Corpus, TextDataConfig, TokenWindows, WindowSampler, token_file
from lmtemplate.tokenization import TokenizerConfig, build_tokenizer, document_separator


@pytest.fixture
def files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.jsonl"
    a.write_text("one two three four\nfive six seven\n" * 40)
    b.write_text("\n".join(json.dumps({"body": f"record {i} says hello"}) for i in range(30)) + "\n")
    return a, b


def tokenize(files, tmp_path, field="body"):
    corpus = Corpus(list(files), field)
    tok = build_tokenizer(TokenizerConfig(vocab_size=300), corpus, tmp_path / "cache")
    return corpus, tok, token_file(corpus, tok, tmp_path / "cache")


def test_token_file_holds_every_document_with_separators(files, tmp_path):
    corpus, tok, tokens = tokenize(files, tmp_path)
    sep = document_separator(tok)
    docs = np.split(np.asarray(tokens), np.flatnonzero(np.asarray(tokens) == sep) + 1)
    assert len([d for d in docs if len(d)]) == 1 + 30  # the text file, then one document per JSONL record
    assert tok.decode(docs[0][:-1].tolist()) == files[0].read_text()
    assert tok.decode(docs[1][:-1].tolist()) == "record 0 says hello"


def test_token_cache_is_reused_and_rebuilt_when_inputs_change(files, tmp_path):
    _, _, first = tokenize(files, tmp_path)
    cached = list((tmp_path / "cache").glob("tokens-*"))
    stamp = cached[0].stat().st_mtime_ns
    _, _, again = tokenize(files, tmp_path)
    assert list((tmp_path / "cache").glob("tokens-*")) == cached
    assert cached[0].stat().st_mtime_ns == stamp  # not rewritten
    files[0].write_text("a different text entirely\n" * 10)
    os.utime(files[0], ns=(stamp + 10**9, stamp + 10**9))
    _, _, changed = tokenize(files, tmp_path)
    assert len(list((tmp_path / "cache").glob("tokens-*"))) == 2
    assert len(changed) != len(first)


def rewrite_keeping_size_and_times(path, text):
    """What ``cp -p``, ``rsync -t`` or tar can do: new content under the same path, size and modification time."""
    before = path.stat()
    assert len(text.encode()) == before.st_size and text != path.read_text()
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_an_edit_that_keeps_size_and_mtime_rebuilds_the_tokenizer_and_token_file_and_says_so(files, tmp_path, caplog):
    _, tok, first = tokenize(files, tmp_path)
    rewrite_keeping_size_and_times(files[0], files[0].read_text().replace("three", "THREE"))
    with caplog.at_level(logging.INFO, logger="lmtemplate"):
        _, retrained, changed = tokenize(files, tmp_path)
    cache = tmp_path / "cache"
    assert len(list(cache.glob("tokenizer-*.json"))) == len(list(cache.glob("tokens-*"))) == 2
    assert len(retrained.encode(" THREE").ids) < len(tok.encode(" THREE").ids)  # trained on the new text
    assert "THREE" in retrained.decode(np.asarray(changed[:20]).tolist())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{files[0]}: its content changed since the cached {kind} was built from it; building a new {kind}"
                        for kind in ("tokenizer", "token file")]


def test_unchanged_moved_or_copied_corpus_reuses_its_caches(files, tmp_path, caplog):
    tokenize(files, tmp_path)
    caches = sorted((tmp_path / "cache").iterdir())
    stamps = [c.stat().st_mtime_ns for c in caches]
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    copies = [shutil.copy(f, moved / f.name) for f in files]  # new paths and modification times, the same bytes
    for corpus_files in (files, copies):
        with caplog.at_level(logging.INFO, logger="lmtemplate"):
            tokenize(corpus_files, tmp_path)
        assert sorted((tmp_path / "cache").iterdir()) == caches
        assert [c.stat().st_mtime_ns for c in caches] == stamps  # nothing rewritten, not even the record
        assert [r.getMessage() for r in caplog.records] == [f"reusing the cached tokenizer {caches[1]}",
                                                            f"reusing the cached token file {caches[2]}"]
        caplog.clear()


def test_the_same_bytes_read_otherwise_are_another_cache(files, tmp_path):
    """A .jsonl file is read as records, a .txt as text: renamed, the same bytes make other tokens."""
    tokenize(files, tmp_path)
    renamed = files[1].rename(files[1].with_suffix(".txt"))
    _, _, tokens = tokenize([files[0], renamed], tmp_path)
    assert len(list((tmp_path / "cache").glob("tokens-*"))) == 2
    assert len(list((tmp_path / "cache").glob("tokenizer-*"))) == 2


def test_fit_trains_on_the_new_text_after_an_edit_that_keeps_size_and_mtime(tmp_path, monkeypatch, caplog):
    from lmtemplate.cli import main

    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the dog number {i} runs to the small red house and back again\n" for i in range(40)))
    tiny = ["data.train=corpus.txt", "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16",
            "tokenizer.vocab_size=300", "trainer.max_steps=1", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false"]
    assert main(["fit", *tiny]) == 0
    rewrite_keeping_size_and_times(corpus, corpus.read_text().replace("dog", "cat"))
    with caplog.at_level(logging.WARNING, logger="lmtemplate"):
        assert main(["fit", *tiny]) == 0
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name.startswith("lmtemplate")] == [str(corpus)] * 2
    runs = [json.loads((tmp_path / f"outputs/demo/version_{v}/tokenizer.json").read_text())["model"]["vocab"] for v in (0, 1)]
    assert "cat" not in runs[0] and "cat" in runs[1]


def test_bad_jsonl_line_names_file_and_line(files, tmp_path):
    files[1].write_text('{"body": "fine"}\n{"text": "wrong field"}\n')
    with pytest.raises(ConfigError, match=r"b.jsonl, line 2.*'body'"):
        tokenize(files, tmp_path)


def test_data_globs_must_match_files(tmp_path):
    with pytest.raises(ConfigError, match=r"data.train: no file matches"):
        TextDataConfig(train=str(tmp_path / "*.txt"))
    with pytest.raises(ConfigError, match="data.val_fraction"):
        TextDataConfig(val_fraction=1.5)


def test_windows_are_inputs_plus_shifted_targets():
    tokens = np.arange(100, dtype=np.uint16)
    w = TokenWindows(tokens, 8)
    assert w[16].tolist() == list(range(16, 25))


def test_sampler_shards_ranks_disjointly_and_covers_the_epoch():
    n, bs = 10_000, 16
    shards = [list(WindowSampler(n, bs, shuffle=True, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == len(shards[0]) for s in shards)
    together = set().union(*map(set, shards))
    assert len(together) == 3 * len(shards[0])  # disjoint
    assert len({s % bs for s in together}) == 1  # one grid per epoch, shifted by a random offset
    assert all(s + bs + 1 <= n for s in together)


def test_sampler_epochs_differ_and_repeat_with_seed():
    a = WindowSampler(5000, 16, shuffle=True, seed=1)
    e0 = list(a)
    a.set_epoch(1)
    e1 = list(a)
    assert e0 != e1
    b = WindowSampler(5000, 16, shuffle=True, seed=1)
    b.set_epoch(1)
    assert list(b) == e1


def test_sampler_resume_skips_what_was_seen_once():
    s = WindowSampler(5000, 16, shuffle=True, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.resume(2, 40)
    assert list(s) == full[40:]
    assert list(s) == full  # the skip applies to one pass only
    assert len(s) == len(full)


def test_validation_sampler_is_in_order():
    assert list(WindowSampler(100, 10, shuffle=False)) == list(range(0, 90, 10))


def test_too_little_data_for_a_window_is_a_clear_error():
    with pytest.raises(ConfigError, match="block_size"):
        WindowSampler(10, 64, shuffle=True)


def test_line_documents_puts_a_separator_after_every_non_empty_line(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("the first line\n\nthe second one\nthird\n")
    corpus = Corpus([path], line_documents=True)
    tok = build_tokenizer(TokenizerConfig(vocab_size=300), corpus, tmp_path / "cache")
    tokens = np.asarray(token_file(corpus, tok, tmp_path / "cache"))
    sep = document_separator(tok)
    docs = [d[:-1] for d in np.split(tokens, np.flatnonzero(tokens == sep) + 1) if len(d)]
    assert [tok.decode(d.tolist()) for d in docs] == ["the first line", "the second one", "third"]


def _reference_tokens(corpus, tok) -> bytes:
    """The token file as the first implementation wrote it: encode_batch per batch, ids flattened in Python."""
    sep = document_separator(tok)
    eos = [] if sep is None else [sep]
    out = []
    for texts, ends in corpus.iter_batches():
        encodings = tok.encode_batch(texts, add_special_tokens=False)
        ids = [i for enc, end in zip(encodings, ends) for i in (enc.ids + eos if end else enc.ids)]
        out.append(np.asarray(ids if texts else eos, dtype=np.uint16).tobytes())
    return b"".join(out)


@pytest.mark.parametrize("line_documents", [False, True])
def test_parallel_build_is_byte_identical_to_the_serial_one(tmp_path, line_documents):
    """Workers tokenize batches side by side; the file is the serial build's (and the first implementation's),
    byte for byte: whole-file and line documents, JSONL, an empty file, a file that fills its batches exactly."""
    from lmtemplate.data.corpus import LINES_PER_BATCH

    texts = {
        "a.txt": "".join(f"line {i}: the quick brown fox jumps over {i % 7} lazy dogs\n" for i in range(5000)),
        "b.jsonl": "\n".join(json.dumps({"text": f"record {i} \u00e9t\u00e9 hello"}) for i in range(3000)) + "\n",
        "c.txt": "",
        "d.txt": "".join(f"exact {i}\n" for i in range(LINES_PER_BATCH)),
        "e.txt": "no newline at the end\n\n\nafter blank lines",
    }
    for name, text in texts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    corpus = Corpus(sorted(tmp_path.glob("*.*")), line_documents=line_documents)
    tok = build_tokenizer(TokenizerConfig(vocab_size=300), corpus, tmp_path / "tok")
    serial = token_file(corpus, tok, tmp_path / "serial", workers=1)
    parallel = token_file(corpus, tok, tmp_path / "parallel", workers=2)
    assert open(serial.filename, "rb").read() == open(parallel.filename, "rb").read() == _reference_tokens(corpus, tok)


def test_the_build_logs_its_progress(files, tmp_path, monkeypatch, caplog):
    import logging

    from lmtemplate.data import corpus as corpus_module

    monkeypatch.setattr(corpus_module, "PROGRESS_SECONDS", 0.0)  # every batch
    with caplog.at_level(logging.INFO, logger="lmtemplate.data.corpus"):
        tokenize(files, tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    assert any("MiB of text" in m and "MiB/s" in m and "left" in m for m in lines), lines
    assert "built" in lines[-1]


def test_default_workers_are_one_for_a_small_corpus_and_a_process_per_core_for_a_large_one():
    from lmtemplate.data.corpus import MAX_WORKERS, PARALLEL_BYTES, default_workers

    assert default_workers(1000) == 1
    assert 1 <= default_workers(PARALLEL_BYTES) <= min(MAX_WORKERS, os.cpu_count())
