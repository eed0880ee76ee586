"""Demo data for question answering in SQuAD format (described in docs/tasks/qa.md): facts about a person among
distractors of the same kinds and fillers, so answering needs the question's kind and the candidate's own sentence."""

from __future__ import annotations

import json
import pathlib
import random

from lmtemplate.files import atomic_write_text

PEOPLE = ["Mara", "Tomas", "Ines", "Olek", "Priya", "Kenji", "Zoë", "José", "Amara", "Lukas", "Noor", "Sven",
          "Aiko", "Ravi", "Elena", "Farid", "Greta", "Hugo", "Ida", "Jonas", "Chloé", "Bram", "Yara", "Milo"]
CITIES = ["Oslo", "Lima", "Porto", "Kyoto", "Nairobi", "Quito", "Tallinn", "New York", "Buenos Aires", "Cape Town",
          "São Paulo", "Hanoi", "Lyon", "Perth", "Dakar", "Riga", "Kraków", "Bergen", "Cusco", "Male"]
JOBS = ["baker", "nurse", "pilot", "teacher", "carpenter", "chemist", "librarian", "fisherman", "architect",
        "violinist", "gardener", "surgeon", "tailor", "judge"]
THINGS = ["cat", "boat", "piano", "bicycle", "garden", "horse", "camera", "telescope"]
THING_ADJECTIVES = ["small", "old", "grey", "red", "wooden", "quiet", "fast", "shiny"]
FILLERS = ["The weather was mild that year.", "Nobody remembers who started the tradition.",
           "The market opens early on Sundays.", "Trains to the coast were often late.",
           "Everyone agreed the summer had been long.", "The river froze twice that winter."]
# fact -> (sentence, question), templates over the person p, the value v and its article a
FACTS = {
    "city": ("{p} lives in {v}.", "Where does {p} live?"),
    "job": ("{p} works as {a} {v}.", "What is {p}'s job?"),
    "year": ("{p} was born in {v}.", "In which year was {p} born?"),
    "thing": ("{p} owns {a} {v}.", "What does {p} own?"),
}
# fact -> sentences that hold a value of the same kind without being about the person
DISTRACTORS = {
    "city": ["The train to {v} was late.", "{v} is known for its bridges."],
    "job": ["The {v} next door is friendly.", "Every {v} in town was busy."],
    "year": ["The old bridge was built in {v}.", "The river froze in {v}."],
    "thing": ["{A} {v} stood in the yard.", "Someone sold {a} {v} at the market."],
}


def _fact_value(rng: random.Random, fact: str, used: set) -> str:
    while True:
        if fact == "year":
            v = str(rng.randint(1940, 2010))
        elif fact == "thing":
            v = f"{' '.join(rng.sample(THING_ADJECTIVES, rng.randint(1, 2)))} {rng.choice(THINGS)}"
        else:
            v = rng.choice(CITIES if fact == "city" else JOBS)
        if v not in used:  # a value occurs once per paragraph, so every question has one answer
            used.add(v)
            return v


def _fill(template: str, person: str, value: str) -> str:
    a = "an" if value[0] in "aeiou" else "a"
    return template.format(p=person, v=value, a=a, A=a.capitalize())


def demo_qa(n: int, seed: int, unanswerable: float = 0.0) -> list[dict]:
    """``n`` questions as SQuAD paragraphs ``{"context", "qas": [{"id", "question", "answers", "is_impossible"}]}``;
    a paragraph states 2-4 facts about one person."""
    rng = random.Random(seed)
    paragraphs, count = [], 0
    while count < n:
        person, used = rng.choice(PEOPLE), set()
        kinds = rng.sample(list(FACTS), rng.randint(2, 4))
        facts = [(f, _fact_value(rng, f, used)) for f in kinds]
        sentences = [_fill(FACTS[f][0], person, v) for f, v in facts]
        for f in rng.sample(list(FACTS), rng.randint(1, 3)):
            sentences.append(_fill(rng.choice(DISTRACTORS[f]), person, _fact_value(rng, f, used)))
        sentences += rng.sample(FILLERS, rng.randint(0, 2))
        rng.shuffle(sentences)
        context = " ".join(sentences)
        qas = []
        for f, v in rng.sample(facts, min(len(facts), rng.randint(1, 3), n - count)):
            missing = [k for k in FACTS if k not in kinds]
            if missing and rng.random() < unanswerable:
                qas.append({"question": FACTS[rng.choice(missing)][1].format(p=person), "answers": [],
                            "is_impossible": True})
                continue
            sentence = _fill(FACTS[f][0], person, v)
            start = context.index(sentence) + sentence.index(v, len(person))
            qas.append({"question": FACTS[f][1].format(p=person), "answers": [{"text": v, "answer_start": start}],
                        "is_impossible": False})
        for i, qa in enumerate(qas, count):
            qa["id"] = f"demo-{seed}-{i}"
        count += len(qas)
        paragraphs.append({"context": context, "qas": qas})
    return paragraphs


def write_demo_qa(folder, n_train: int, n_val: int, unanswerable: float, seed: int) -> tuple[pathlib.Path, ...]:
    """Write ``train.json`` and ``val.json`` (SQuAD v2.0 format; v1.1 readers ignore ``is_impossible``) of
    demo_qa data into ``folder``, drawn with seeds ``2 * seed`` and ``2 * seed + 1``; returns both paths."""
    folder = pathlib.Path(folder)
    paths = folder / "train.json", folder / "val.json"
    for path, n, split_seed in zip(paths, (n_train, n_val), (2 * seed, 2 * seed + 1)):
        paragraphs = demo_qa(n, split_seed, unanswerable)
        articles = [{"title": f"demo {i // 20}", "paragraphs": paragraphs[i: i + 20]}
                    for i in range(0, len(paragraphs), 20)]
        atomic_write_text(path, json.dumps({"version": "v2.0", "data": articles}, ensure_ascii=False) + "\n")
    return paths
