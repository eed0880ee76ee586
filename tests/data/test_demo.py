"""Tests for the built-in demo corpus (lmtemplate.data.demo)."""

import math
import re
from collections import Counter

import pytest

from lmtemplate.data import demo
from lmtemplate.data.demo import demo_lines, write_demo_corpus

N = 3000
LINES = demo_lines(N, seed=0)


def test_deterministic_and_prefix_stable():
    assert demo_lines(N, seed=0) == LINES
    assert demo_lines(N, seed=1) != LINES
    assert demo_lines(50, seed=0) == LINES[:50]  # documented prefix stability
    assert len(LINES) == N and all(line and "\n" not in line for line in LINES)


def _alt(words):
    return "|".join(sorted(words, key=len, reverse=True))


SG_NOUNS, PL_NOUNS = set(demo.NOUNS), set(demo.NOUNS.values())
PL_VERBS = set(demo.INTRANSITIVE) | set(demo.TRANSITIVE)
SG_VERBS = set(demo.INTRANSITIVE.values()) | set(demo.TRANSITIVE.values())
_A, _N = _alt(demo.ADJECTIVES), _alt(SG_NOUNS | PL_NOUNS)
_NP = rf"the (?:(?:{_A}) )?"
AGREEMENT = re.compile(
    rf"{_NP}(?P<head>{_N})"
    rf"(?: (?:{_alt(demo.PREPOSITIONS)}) {_NP}(?:{_N})"
    rf"| that {_NP}(?P<rel>{_N}) (?P<relverb>{_alt(demo.TRANSITIVE.values())}|{_alt(demo.TRANSITIVE)}))?"
    rf" (?P<verb>{_alt(PL_VERBS | SG_VERBS)})(?: {_NP}(?:{_N}))?(?: (?:{_alt(demo.ADVERBS)}))? \."
)


def _agreement_sentences(line):
    """Every sentence starting with 'the', both inside quotes and at top level."""
    quoted = re.findall(r'" (.*?) "', line)
    rest = re.sub(r'" .*? "', "Q", line)
    for segment in quoted + [rest]:
        for sentence in re.findall(r"(?:^|(?<=\. ))the [^.]*\.", segment):
            yield sentence


def test_subject_verb_agreement():
    checked = attracted = relative = 0
    for line in LINES:
        for sentence in _agreement_sentences(line):
            m = AGREEMENT.fullmatch(sentence)
            assert m, f"unparseable agreement sentence: {sentence!r}"
            head_plural, verb_plural = m["head"] in PL_NOUNS, m["verb"] in PL_VERBS
            assert head_plural == verb_plural, f"main verb disagrees: {sentence!r}"
            if m["rel"]:
                relative += 1
                assert (m["rel"] in PL_NOUNS) == (m["relverb"] in PL_VERBS), sentence
                attracted += (m["rel"] in PL_NOUNS) != head_plural
            checked += 1
    # Not vacuous: many sentences, many with an attractor of the opposite number.
    assert checked > N and relative > N / 4 and attracted > N / 10


def test_brackets_and_quotes_balanced():
    pairs = {")": "(", "]": "["}
    nested = 0
    for line in LINES:
        stack = []
        for tok in line.split():
            if tok == '"':
                if stack and stack[-1] == '"':
                    stack.pop()
                else:
                    stack.append(tok)
            elif tok in "([":
                stack.append(tok)
                nested += len(stack) > 1
            elif tok in pairs:
                assert stack and stack.pop() == pairs[tok], f"unbalanced: {line!r}"
        assert not stack, f"unclosed {stack}: {line!r}"
    assert nested > 0  # nesting actually occurs


def test_write_demo_corpus(tmp_path):
    target = tmp_path / "sub" / "dir" / "demo.txt"
    out = write_demo_corpus(target, n_lines=123, seed=5)
    assert out == target
    text = target.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert text.split("\n")[:-1] == demo_lines(123, seed=5)
    assert sorted(p.name for p in target.parent.iterdir()) == ["demo.txt"]  # no temp left
    with pytest.raises(ValueError):
        write_demo_corpus(tmp_path / "bad.txt", n_lines=-1)
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "bad.txt").exists()


def _entropies(lines):
    """Held-out cross-entropies (bits/word): add-one unigram vs interpolated trigram."""
    cut = len(lines) * 9 // 10
    uni, bi, tri, ctx1, ctx2 = Counter(), Counter(), Counter(), Counter(), Counter()
    for line in lines[:cut]:
        w = ["<s>", "<s>"] + line.split() + ["</s>"]
        for i in range(2, len(w)):
            uni[w[i]] += 1
            bi[w[i - 1], w[i]] += 1
            ctx1[w[i - 1]] += 1
            tri[w[i - 2], w[i - 1], w[i]] += 1
            ctx2[w[i - 2], w[i - 1]] += 1
    total, vocab = sum(uni.values()), len(uni) + 1  # +1 for unseen words
    h_uni = h_tri = n = 0.0
    for line in lines[cut:]:
        w = ["<s>", "<s>"] + line.split() + ["</s>"]
        for i in range(2, len(w)):
            p1 = (uni[w[i]] + 1) / (total + vocab)
            p2 = 0.9 * bi[w[i - 1], w[i]] / ctx1[w[i - 1]] + 0.1 * p1 if ctx1[w[i - 1]] else p1
            c2 = ctx2[w[i - 2], w[i - 1]]
            p3 = 0.9 * tri[w[i - 2], w[i - 1], w[i]] / c2 + 0.1 * p2 if c2 else p2
            h_uni -= math.log2(p1)
            h_tri -= math.log2(p3)
            n += 1
    return h_uni / n, h_tri / n


def test_trigram_entropy_well_below_unigram():
    h_uni, h_tri = _entropies(LINES)
    # Learnability proxy: a smoothed word-trigram model already predicts held-out
    # text >= 1 bit/word better than unigram frequencies. A small GPT sees at least
    # this much context, so it can push validation loss at least that far below the
    # unigram entropy; a corpus of unstructured word soup would fail this bound.
    assert h_tri <= h_uni - 1.0, (h_uni, h_tri)
