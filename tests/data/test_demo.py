"""Tests for the built-in demo corpus (lmtemplate.data.demo)."""

import math
import re
from collections import Counter

import pytest

from lmtemplate.data.demo import sentiment
from lmtemplate.data.demo import text as demo
from lmtemplate.data.demo.sentiment import demo_sentiment, write_demo_classification
from lmtemplate.data.demo.text import demo_lines, write_demo_corpus
from lmtemplate.data.tables import read_table

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


# --- the demo sentiment data set ---------------------------------------------------

REVIEWS = demo_sentiment(2000, seed=0)


def test_sentiment_deterministic_and_balanced():
    assert demo_sentiment(2000, seed=0) == REVIEWS
    assert demo_sentiment(2000, seed=1) != REVIEWS
    for n in (1, 7, 2000):
        positive = sum(label == "positive" for _, label in demo_sentiment(n, seed=3))
        assert abs(positive - n / 2) <= 0.5
    assert {label for _, label in REVIEWS} == {"positive", "negative"}


def test_sentiment_text_format():
    for text, _ in REVIEWS:
        assert text == " ".join(text.split()) and text == text.lower() and "\t" not in text
    vocabulary = {word for text, _ in REVIEWS for word in text.split()}
    assert 20 <= len(vocabulary) <= 60


def _rule(text):
    """The documented rule: the last clause decides; "not" flips its adjective."""
    last = re.split(r" (?:but|and) ", text)[-1].split()
    return "positive" if (last[-1] in sentiment.POSITIVE) != ("not" in last) else "negative"


def test_sentiment_label_follows_the_documented_rule():
    assert all(_rule(text) == label for text, label in REVIEWS)
    labels = {}
    for text, label in REVIEWS:
        assert labels.setdefault(text, label) == label  # no text with two labels
    words = " ".join(text for text, _ in REVIEWS).split()
    assert words.count("not") > 200 and words.count("but") > 200  # negation and contrast are common


def test_sentiment_needs_word_order():
    bags = {}
    for text, label in REVIEWS:
        bags.setdefault(tuple(sorted(text.split())), set()).add(label)
    assert any(len(labels) == 2 for labels in bags.values())  # same words, different labels

    # A per-word-count (multinomial) Naive Bayes falls far short of the perfect rule.
    counts = {"positive": Counter(), "negative": Counter()}
    for text, label in REVIEWS:
        counts[label].update(text.split())
    vocabulary = set(counts["positive"]) | set(counts["negative"])

    def log_likelihood(text, label):
        total = sum(counts[label].values()) + len(vocabulary)
        return sum(math.log((counts[label][word] + 1) / total) for word in text.split())

    held_out = demo_sentiment(2000, seed=1)
    correct = sum(max(counts, key=lambda label: log_likelihood(text, label)) == y for text, y in held_out)
    assert correct / len(held_out) < 0.9


def test_write_demo_classification(tmp_path):
    folder = tmp_path / "sub" / "sst"
    train, val = write_demo_classification(folder, n_train=30, n_val=11, seed=4)
    assert (train, val) == (folder / "train.tsv", folder / "val.tsv")
    assert sorted(p.name for p in folder.iterdir()) == ["train.tsv", "val.tsv"]  # no temp left
    columns = {"text": "data.text_column", "label": "data.label_column"}

    def rows(path):
        table = read_table(path, columns, nonempty=("text",))
        assert table.lines == list(range(2, len(table.rows) + 2))  # one row per line after the header
        return [(row["text"], row["label"]) for row in table.rows]

    for path in (train, val):
        assert path.read_text(encoding="utf-8").startswith("text\tlabel\n")
    # The documented split seeds 2 * seed and 2 * seed + 1: the splits differ.
    assert rows(train) == demo_sentiment(30, seed=8) and rows(val) == demo_sentiment(11, seed=9)
    assert rows(val) != rows(train)[:11]
    assert write_demo_classification(folder, 30, 11, seed=4) == (train, val)  # rewriting gives the same files
    assert rows(train) == demo_sentiment(30, seed=8)
