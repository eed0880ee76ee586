"""SQuAD reading (with its errors), windows over long contexts, and the oracle: gold targets survive
feature building and post-processing character for character."""

import json
from pathlib import Path

import pytest

from lmtemplate.config import ConfigError
from lmtemplate.data.demo.qa import demo_qa, write_demo_qa
from lmtemplate.data.squad import QAExample, build_features, read_squad, token_span, windows
from lmtemplate.tasks.qa_postprocess import oracle
from lmtemplate.tasks.squad_metric import squad_scores
from lmtemplate.tokenization import EncoderTokenizerConfig, train_tokenizer

SQUAD_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "squad" / "dev-v1.1.json"


def squad(paragraphs: list[dict]) -> dict:
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}


def write(tmp_path, data, name="data.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    texts = [p["context"] for p in demo_qa(400, 0)] + ["Zoë  met José in São Paulo, twice", "naïve café 1990s"] * 5
    return train_tokenizer(EncoderTokenizerConfig(vocab_size=600, lowercase=True), iter(texts))


def test_reads_squad_json_and_jsonl_in_both_answer_layouts(tmp_path):
    ctx = "Anna lives in Oslo."
    v2 = squad([{"context": ctx, "qas": [
        {"id": "a", "question": "Where?", "answers": [{"text": "Oslo", "answer_start": 14}]},
        {"id": "b", "question": "Who else?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Anna", "answer_start": 0}]},
    ]}])
    assert read_squad(write(tmp_path, v2)) == [QAExample("a", "Where?", ctx, [("Oslo", 14)]),
                                               QAExample("b", "Who else?", ctx, [])]
    lines = [{"id": "c", "question": "Where?", "context": ctx, "answers": {"text": ["Oslo"], "answer_start": [14]}},
             {"id": "d", "question": "Who?", "context": ctx, "answers": [{"text": "Anna", "answer_start": 0}]}]
    path = write(tmp_path, "\n".join(json.dumps(r) for r in lines) + "\n", "data.jsonl")
    assert [(e.id, e.answers) for e in read_squad(path)] == [("c", [("Oslo", 14)]), ("d", [("Anna", 0)])]


@pytest.mark.parametrize("data, expected", [
    ('{"data": [', "not valid JSON (line 1, column 11"),
    ({"articles": []}, "expected SQuAD JSON, an object whose 'data' is a list"),
    (squad([{"context": "Anna lives in Oslo.", "qas": [
        {"id": "q7", "question": "Where?", "answers": [{"text": "Oslo", "answer_start": 3}]}]}]),
     "example q7: answer_start 3 points at 'a li' in the context, not at the answer text 'Oslo'"),
    (squad([{"context": "Anna lives in Oslo.", "qas": [{"id": "q8", "answers": []}]}]),
     "example q8: missing field 'question'"),
    (squad([{"context": "Anna lives in Oslo.", "qas": [{"id": "q9", "question": "Where?"}]}]),
     "example q9: missing field 'answers'"),
    (squad([{"qas": []}]), "article 0, paragraph 0: missing field 'context'"),
    (squad([{"context": "x", "qas": [{"id": "q", "question": "a?", "answers": []}, {"id": "q", "question": "b?",
                                                                                     "answers": []}]}]),
     "example id q occurs twice"),
])
def test_bad_squad_files_fail_naming_the_example(tmp_path, data, expected):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        read_squad(path)
    assert str(path) in str(e.value) and expected in str(e.value)


def test_bad_jsonl_line_is_named(tmp_path):
    path = write(tmp_path, '{"id": "1", "question": "q?", "context": "c", "answers": []}\n{oops\n', "x.jsonl")
    with pytest.raises(ConfigError, match=r"x.jsonl, line 2: not valid JSON"):
        read_squad(path)


def test_windows_cover_every_token_with_the_configured_stride():
    assert windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert windows(3, 4, 2) == [(0, 3)]
    for n, room, stride in [(1, 5, 5), (57, 10, 4), (100, 30, 30)]:
        spans = windows(n, room, stride)
        assert spans[0][0] == 0 and spans[-1][1] == n and all(b - a <= room for a, b in spans)
        assert all(b[0] <= a[1] for a, b in zip(spans, spans[1:]))  # no gap


def test_token_span_maps_characters_to_tokens():
    offsets = [(0, 4), (5, 10), (11, 13), (14, 18), (18, 19)]  # "Anna lives in Oslo."
    assert token_span(offsets, 14, 18) == (3, 3)
    assert token_span(offsets, 5, 18) == (1, 3)
    assert token_span(offsets, 15, 17) == (3, 3)  # inside a token: the token that holds it


def assert_oracle_is_exact(examples, features):
    predicted = oracle(examples, features)
    for e in examples:
        gold = e.answers[0][0] if e.answers else ""
        assert predicted[e.id] == gold, (e.id, e.context, gold, predicted[e.id])


def test_oracle_reproduces_every_demo_answer_exactly(tokenizer, tmp_path):
    """Long paragraphs are cut into windows here (36 tokens, stride 12), and a tenth of the questions are unanswerable."""
    train, _ = write_demo_qa(tmp_path, 500, 10, 0.1, 0)
    examples = read_squad(train)
    features = build_features(examples, tokenizer, 36, 12, 16)
    assert len(features) > 2 * len(examples)  # most paragraphs needed several windows
    assert_oracle_is_exact(examples, features)
    golds = {e.id: [t for t, _ in e.answers] for e in examples}
    scores = squad_scores(oracle(examples, features), golds)
    assert scores["exact"] == scores["f1"] == 100.0 and scores["NoAns_exact"] == 100.0


def test_oracle_with_unicode_repeated_spaces_and_answers_across_a_window_boundary(tokenizer):
    context = "Zoë  met José in   São Paulo, twice. naïve café 1990s"
    answers = ["Zoë", "José", "São Paulo", "naïve café", "1990"]
    examples = [QAExample(str(i), "who?", context, [(a, context.index(a))]) for i, a in enumerate(answers)]
    for max_length, stride in [(64, 32), (14, 3), (11, 2)]:  # one window; many small ones
        features = build_features(examples[:4], tokenizer, max_length, stride, 4)
        assert_oracle_is_exact(examples[:4], features)
    # Windows whose first one ends inside "São Paulo": the answer is found whole in a later window.
    straddling = 0
    for max_length in range(9, 16):
        features = build_features(examples[2:3], tokenizer, max_length, 2, 4)
        first, end = features[0], features[0].offsets[-2][1]  # the first window's last context character
        if context.index("São") < end < context.index("Paulo") + 5:
            straddling += 1
            assert first.start == first.end == 0 and any(f.start for f in features[1:])
            assert_oracle_is_exact(examples[2:3], features)
    assert straddling >= 1
    # "1990" is only part of a token ("1990s", or "1990" + "##s"): the answer is cut at token boundaries
    features = build_features(examples[4:], tokenizer, 64, 32, 4)
    assert oracle(examples[4:], features)["4"] in ("1990", "1990s")


def test_stride_larger_than_the_window_is_refused(tokenizer):
    with pytest.raises(ConfigError, match=r"data.doc_stride \(50\) is larger than the room left"):
        build_features([QAExample("1", "who?", "Anna", [])], tokenizer, 32, 50, 8)


@pytest.mark.slow
@pytest.mark.skipif(not SQUAD_DEV.is_file(), reason="needs ../shared/data/squad/dev-v1.1.json")
def test_oracle_ceiling_on_squad_dev_is_at_least_99(tmp_path):
    """How much of SQuAD v1.1 dev a perfect span model could get back through our tokenization and windows."""
    examples = read_squad(SQUAD_DEV)
    texts = [e.context for e in examples[::5]] + [e.question for e in examples]
    tok = train_tokenizer(EncoderTokenizerConfig(vocab_size=8000, lowercase=True), iter(texts))
    features = build_features(examples, tok, 256, 128, 64)
    scores = squad_scores(oracle(examples, features), {e.id: [t for t, _ in e.answers] for e in examples})
    print(f"SQuAD v1.1 dev oracle: EM {scores['exact']:.2f}, F1 {scores['f1']:.2f}")
    assert scores["exact"] >= 99.0 and scores["f1"] >= 99.5
