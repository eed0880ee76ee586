"""Built-in demo corpus: a tiny English-like grammar a small LM can learn in minutes.

Each line is a short paragraph of 1-4 sentences; words and punctuation are
separated by single spaces and drawn from a ~130-word vocabulary, so a
~512-token byte-level BPE keeps every word whole. What a model can learn:

* agreement -- ``the old dogs near the cat run .`` /
  ``the cat that the dogs chase sleeps today .``  The main verb agrees in
  number with the head noun, not with the nearer "attractor" noun inside the
  prepositional phrase or relative clause (whose own verb agrees with its own
  subject).
* dialogue -- ``anna says " the boxes fall . " to ben .``  balanced quotes
  around an agreement sentence.
* brackets -- ``ben writes ( red [ box ( tree ) ] fox ) .``  balanced, nested
  ``( )`` and ``[ ]`` up to depth 4.
* counting -- ``cara counts : four five six seven .``  number words counting
  up by one (from one to twenty).
* long range -- a paragraph that opens with ``dora :`` ends with ``bye dora .``

Lines are generated sequentially from a single ``random.Random(seed)``, so the
output is deterministic in ``seed`` and prefix-stable: the first k lines of
``demo_lines(n, s)`` equal ``demo_lines(k, s)``.

``demo_sentiment`` and ``write_demo_classification`` make a separate demo set
for classification: short reviews labelled positive or negative by a rule that
depends on word order (negation, and "but" contrasts).

``demo_qa`` and ``write_demo_qa`` make SQuAD-format question answering data:
paragraphs of facts about a person (where they live, their job, birth year,
what they own) among distractor sentences holding values of the same kinds,
and questions whose answers are spans (some of several words, some with
non-ASCII letters), or optionally questions about facts the paragraph does not
state (unanswerable).
"""

from __future__ import annotations

import json
import pathlib
import random

from lmtemplate.tokenization import atomic_write_text

# singular -> plural
NOUNS = {
    "dog": "dogs", "cat": "cats", "bird": "birds", "tree": "trees",
    "girl": "girls", "boy": "boys", "box": "boxes", "car": "cars",
    "king": "kings", "fox": "foxes", "house": "houses", "child": "children",
}
# plural (base) form -> singular form
INTRANSITIVE = {
    "sleep": "sleeps", "run": "runs", "sing": "sings",
    "wait": "waits", "fall": "falls", "smile": "smiles",
}
TRANSITIVE = {
    "chase": "chases", "see": "sees", "like": "likes",
    "follow": "follows", "help": "helps", "watch": "watches",
}
ADJECTIVES = ["old", "small", "red", "blue", "happy", "quiet", "big", "green"]
PREPOSITIONS = ["near", "behind", "under", "with", "beside"]
ADVERBS = ["today", "again", "slowly", "here", "now"]
NAMES = ["anna", "ben", "cara", "dora", "emil", "finn", "gus", "hana"]
SAY_VERBS = ["says", "asks", "shouts"]
NUMBERS = ("one two three four five six seven eight nine ten eleven twelve "
           "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
BRACKETS = [("(", ")"), ("[", "]")]
_SINGULAR = list(NOUNS)


def _noun_phrase(rng: random.Random) -> tuple[list[str], bool]:
    """``the [adj] noun`` with a random number; returns (words, is_plural)."""
    plural = rng.random() < 0.5
    sg = rng.choice(_SINGULAR)
    words = ["the"] + ([rng.choice(ADJECTIVES)] if rng.random() < 0.4 else [])
    return words + [NOUNS[sg] if plural else sg], plural


def _verb(rng: random.Random, table: dict[str, str], plural: bool) -> str:
    base = rng.choice(list(table))
    return base if plural else table[base]


def _agreement(rng: random.Random) -> list[str]:
    words, plural = _noun_phrase(rng)
    r = rng.random()
    if r < 0.4:  # prepositional phrase with an attractor noun
        words += [rng.choice(PREPOSITIONS)] + _noun_phrase(rng)[0]
    elif r < 0.8:  # object relative clause; its verb agrees with its own subject
        inner, inner_plural = _noun_phrase(rng)
        words += ["that"] + inner + [_verb(rng, TRANSITIVE, inner_plural)]
    if rng.random() < 0.5:
        words.append(_verb(rng, INTRANSITIVE, plural))
    else:
        words += [_verb(rng, TRANSITIVE, plural)] + _noun_phrase(rng)[0]
    if rng.random() < 0.3:
        words.append(rng.choice(ADVERBS))
    return words + ["."]


def _dialogue(rng: random.Random) -> list[str]:
    speaker, listener = rng.sample(NAMES, 2)
    return [speaker, rng.choice(SAY_VERBS), '"', *_agreement(rng), '"', "to", listener, "."]


def _bracket_items(rng: random.Random, depth: int) -> list[str]:
    items: list[str] = []
    for _ in range(rng.randint(1, 3)):
        if depth < 4 and rng.random() < 0.35:
            left, right = rng.choice(BRACKETS)
            items += [left, *_bracket_items(rng, depth + 1), right]
        else:
            items.append(rng.choice(ADJECTIVES + _SINGULAR))
    return items


def _brackets(rng: random.Random) -> list[str]:
    return [rng.choice(NAMES), "writes", "(", *_bracket_items(rng, 2), ")", "."]


def _counting(rng: random.Random) -> list[str]:
    length = rng.randint(3, 7)
    start = rng.randint(0, len(NUMBERS) - length)
    return [rng.choice(NAMES), "counts", ":", *NUMBERS[start:start + length], "."]


_KINDS = [_agreement, _dialogue, _brackets, _counting]
_WEIGHTS = [0.5, 0.2, 0.15, 0.15]


def _paragraph(rng: random.Random) -> str:
    words: list[str] = []
    for kind in rng.choices(_KINDS, _WEIGHTS, k=rng.randint(1, 4)):
        words += kind(rng)
    if rng.random() < 0.3:  # long-range dependency: the opening name returns at the end
        name = rng.choice(NAMES)
        words = [name, ":", *words, "bye", name, "."]
    return " ".join(words)


def demo_lines(n_lines: int, seed: int = 0) -> list[str]:
    """Return ``n_lines`` demo paragraphs (no newlines inside), deterministic in ``seed``.

    Prefix-stable: ``demo_lines(n, s)[:k] == demo_lines(k, s)`` for ``k <= n``.
    """
    if n_lines < 0:
        raise ValueError(f"n_lines must be >= 0, got {n_lines}")
    rng = random.Random(seed)
    return [_paragraph(rng) for _ in range(n_lines)]


def write_demo_corpus(path, n_lines: int = 25000, seed: int = 0) -> pathlib.Path:
    """Write ``demo_lines(n_lines, seed)`` to ``path`` (UTF-8, one per line) atomically.

    Parent directories are created; the text goes to a temporary file in the same
    folder which is then ``os.replace``-d onto ``path``. Returns ``path``.
    """
    path = pathlib.Path(path)
    atomic_write_text(path, "".join(line + "\n" for line in demo_lines(n_lines, seed)))
    return path


# The demo sentiment data set (write_demo_classification): see demo_sentiment.
SUBJECTS = {  # subject -> the copula that agrees with it
    "film": "was", "movie": "was", "plot": "was", "story": "was", "ending": "was", "music": "was",
    "script": "was", "acting": "was", "actors": "were", "jokes": "were", "characters": "were", "songs": "were",
}
POSITIVE = ["good", "great", "fine", "funny", "clever", "lovely", "brilliant"]
NEGATIVE = ["bad", "dull", "awful", "boring", "weak", "silly", "poor"]
INTENSIFIERS = ["very", "really", "quite", "truly", "so"]


def _clause(rng: random.Random, subject: str, positive: bool) -> list[str]:
    """``the <subject> was|were [not] [intensifier] <adjective>`` whose meaning is ``positive``."""
    negated = rng.random() < 0.3
    words = ["the", subject, SUBJECTS[subject]] + (["not"] if negated else [])
    if rng.random() < 0.4:
        words.append(rng.choice(INTENSIFIERS))
    return words + [rng.choice(POSITIVE if positive != negated else NEGATIVE)]


def _review(rng: random.Random, positive: bool) -> str:
    first, second = rng.sample(list(SUBJECTS), 2)
    form = rng.random()
    if form < 0.4:
        words = _clause(rng, first, positive)
    elif form < 0.8:  # contrast: the clause after "but" wins
        words = _clause(rng, first, not positive) + ["but"] + _clause(rng, second, positive)
    else:
        words = _clause(rng, first, positive) + ["and"] + _clause(rng, second, positive)
    return " ".join(words)


def demo_sentiment(n: int, seed: int) -> list[tuple[str, str]]:
    """Return ``n`` movie-review-like ``(text, label)`` pairs, deterministic in ``(n, seed)``.

    Each text is one clause ``the <subject> was|were [not] [intensifier]
    <adjective>``, or two clauses joined by ``but`` (of opposite meanings) or
    ``and`` (of the same meaning), e.g. ``the plot was dull but the actors were
    not bad``. The rule that decides the label: **the last clause decides**; it
    is positive when its adjective is in POSITIVE and there is no ``not``
    before it, or its adjective is in NEGATIVE and there is a ``not``; the label
    is "positive" or "negative" accordingly. So the label is a function of the
    text, and of word order: which clause comes last and which adjective a
    ``not`` belongs to, which a bag of words cannot see.

    Exactly half the examples (rounded up) are positive, in shuffled order.
    Words are lowercase and separated by single spaces (37 words in all).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    examples = [(_review(rng, i % 2 == 0), "positive" if i % 2 == 0 else "negative") for i in range(n)]
    rng.shuffle(examples)
    return examples


def write_demo_classification(folder, n_train: int, n_val: int, seed: int) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``train.tsv`` and ``val.tsv`` (header ``text<TAB>label``) of demo_sentiment data into ``folder``.

    The two splits are drawn with different seeds derived from ``seed``
    (``2 * seed`` and ``2 * seed + 1``), so they differ; short single-clause
    texts can still occur in both. Each file is written atomically. Returns
    (train path, val path).
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.tsv", folder / "val.tsv"
    for path, n, split_seed in zip(paths, (n_train, n_val), (2 * seed, 2 * seed + 1)):
        rows = "".join(f"{text}\t{label}\n" for text, label in demo_sentiment(n, split_seed))
        atomic_write_text(path, "text\tlabel\n" + rows)
    return paths



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
        if fact == "city":
            v = rng.choice(CITIES)
        elif fact == "job":
            v = rng.choice(JOBS)
        elif fact == "year":
            v = str(rng.randint(1940, 2010))
        else:
            v = f"{' '.join(rng.sample(THING_ADJECTIVES, rng.randint(1, 2)))} {rng.choice(THINGS)}"
        if v not in used:  # a value occurs once per paragraph, so every question has one answer
            used.add(v)
            return v


def _fill(template: str, person: str, value: str) -> str:
    a = "an" if value[0] in "aeiou" else "a"
    return template.format(p=person, v=value, a=a, A=a.capitalize())


def demo_qa(n: int, seed: int, unanswerable: float = 0.0) -> list[dict]:
    """``n`` questions as SQuAD paragraphs ``{"context", "qas": [{"id", "question", "answers", "is_impossible"}]}``.

    A paragraph states 2-4 facts about one person, among distractors: sentences
    holding a value of the same kind (another city, year, ...) that is not about
    the person, and fillers. Answering needs the question's kind and the
    candidate's own sentence; unanswerable questions ask for a fact the
    paragraph does not state.
    """
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
        for qa in qas:
            qa["id"] = f"demo-{seed}-{count}"
            count += 1
        paragraphs.append({"context": context, "qas": qas})
    return paragraphs


def write_demo_qa(folder, n_train: int, n_val: int, unanswerable: float, seed: int) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``train.json`` and ``val.json`` (SQuAD v2.0 format; v1.1 readers ignore ``is_impossible``) of
    demo_qa data into ``folder``, drawn with seeds ``2 * seed`` and ``2 * seed + 1``; returns both paths."""
    folder = pathlib.Path(folder)
    paths = folder / "train.json", folder / "val.json"
    for path, n, split_seed in zip(paths, (n_train, n_val), (2 * seed, 2 * seed + 1)):
        paragraphs = demo_qa(n, split_seed, unanswerable)
        articles = [{"title": f"demo {i // 20}", "paragraphs": paragraphs[i: i + 20]} for i in range(0, len(paragraphs), 20)]
        atomic_write_text(path, json.dumps({"version": "v2.0", "data": articles}, ensure_ascii=False) + "\n")
    return paths


# The demo translation data set (write_demo_translation): see demo_translation.
DEMO_NOUNS = {  # English noun -> the made-up language's noun
    "dog": "hundo", "cat": "mizo", "bird": "pajaro", "horse": "kavalo", "girl": "nina", "boy": "nino",
    "farmer": "bonero", "teacher": "lerero", "ball": "balo", "apple": "pomo", "book": "libro", "box": "kesto",
    "tree": "arbo", "house": "domo", "garden": "gardo", "river": "rivo",
}
DEMO_ADJECTIVES = {"big": "granda", "small": "peta", "red": "roza", "old": "vieja", "happy": "gaja",
                   "green": "verda", "quiet": "kvieta", "fast": "rapida"}
DEMO_VERBS = {  # English (singular, plural) -> stem; the made-up verb ends in -a (singular) or -an (plural)
    ("sees", "see"): "vid", ("likes", "like"): "am", ("finds", "find"): "trov", ("chases", "chase"): "chas",
    ("watches", "watch"): "rigard", ("carries", "carry"): "port", ("helps", "help"): "help",
}
DEMO_PREPOSITIONS = {"in": "en", "near": "apud", "under": "sub", "behind": "malantau"}


def _demo_phrases(rng: random.Random) -> tuple[list[str], list[str], bool]:
    """One noun phrase: English ``det [adj] noun[s]``, made-up ``det noun[en] [adj[s]]``, and whether it is plural."""
    noun, plural = rng.choice(list(DEMO_NOUNS)), rng.random() < 0.4
    definite = rng.random() < 0.6
    en = ["the" if definite else ("some" if plural else "a")]
    xx = [("los" if plural else "lo") if definite else ("unos" if plural else "un")]
    en_noun = noun + ("es" if noun.endswith("x") else "s") if plural else noun
    xx_noun = [DEMO_NOUNS[noun] + ("en" if plural else "")]
    if rng.random() < 0.5:
        adjective = rng.choice(list(DEMO_ADJECTIVES))
        return en + [adjective, en_noun], xx + xx_noun + [DEMO_ADJECTIVES[adjective] + ("s" if plural else "")], plural
    return en + [en_noun], xx + xx_noun, plural


def demo_translation(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (English, made-up language) sentence pairs, deterministic in ``(n, seed)``.

    English ``subject verb object [preposition noun-phrase]`` becomes
    ``[preposition noun-phrase ,] subject object verb``: the prepositional phrase
    moves to the front and the verb to the end; adjectives follow their noun.
    Words map one to one, and number agrees: a plural noun takes -en, its
    determiner and adjective change (lo/los, un/unos, -s), and the verb ends in
    -a after a singular subject and -an after a plural one, wherever the subject
    ended up. For example ``the small dogs chase a ball near the river`` ->
    ``apud lo rivo , los hundoen petas un balo chasan``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        (subject_en, subject_xx, plural), (object_en, object_xx, _) = _demo_phrases(rng), _demo_phrases(rng)
        verb = rng.choice(list(DEMO_VERBS))
        en, xx = subject_en + [verb[plural]] + object_en, subject_xx + object_xx + [DEMO_VERBS[verb] + ("an" if plural else "a")]
        if rng.random() < 0.4:
            preposition = rng.choice(list(DEMO_PREPOSITIONS))
            place_en, place_xx, _ = _demo_phrases(rng)
            en, xx = en + [preposition] + place_en, [DEMO_PREPOSITIONS[preposition]] + place_xx + [","] + xx
        pairs.append((" ".join(en), " ".join(xx)))
    return pairs


def write_demo_translation(folder, n_train: int, n_val: int, seed: int) -> tuple[pathlib.Path, pathlib.Path]:
    """Write aligned ``train.src`` / ``train.tgt`` and ``val.src`` / ``val.tgt`` of demo_translation data into ``folder``.

    The splits are drawn with seeds ``2 * seed`` and ``2 * seed + 1``; each file is
    written atomically. Returns the two prefixes (``folder/train``, ``folder/val``).
    """
    folder = pathlib.Path(folder)
    prefixes = folder / "train", folder / "val"
    for prefix, n, split_seed in zip(prefixes, (n_train, n_val), (2 * seed, 2 * seed + 1)):
        pairs = demo_translation(n, split_seed)
        for side, suffix in enumerate(("src", "tgt")):
            atomic_write_text(prefix.with_suffix(f".{suffix}"), "".join(pair[side] + "\n" for pair in pairs))
    return prefixes
