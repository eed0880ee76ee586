"""Demo data for summarization: a paragraph of facts among fillers, summarized by one sentence of the facts."""

from __future__ import annotations

import random

NAMES = ["anna", "ben", "carla", "david", "emma", "felix", "grace", "henry", "iris", "jack", "lena", "mark"]
PLACES = ["museum", "market", "library", "harbour", "station", "park", "bakery", "theatre", "school", "garden"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "brown", "grey"]
THINGS = ["hat", "book", "lamp", "scarf", "clock", "bag", "cup", "kite", "map", "coat"]
FILLERS = [
    "the weather was {weather} all week .", "many people were in town .", "the streets were {weather} and quiet .",
    "nobody talked about the news .", "the buses ran late again .", "a dog barked somewhere .",
    "the shops opened early that morning .", "it was a {weather} day .",
]
WEATHER = ["cold", "warm", "wet", "dry", "windy", "sunny"]


def demo_summaries(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` rows ``{"source", "summary"}``, deterministic in ``(n, seed)``.

    The source holds two facts, ``<name> went to the <place> on <day> .`` and ``the <thing> that <name> bought
    was <colour> .``, between two to four filler sentences in random order; the summary is
    ``on <day> <name> went to the <place> and bought a <colour> <thing> .``: five words to find and reorder.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, place, day, colour, thing = (rng.choice(words) for words in (NAMES, PLACES, DAYS, COLOURS, THINGS))
        sentences = [f"{name} went to the {place} on {day} .", f"the {thing} that {name} bought was {colour} ."]
        sentences += [f.format(weather=rng.choice(WEATHER)) for f in rng.sample(FILLERS, rng.randint(2, 4))]
        rng.shuffle(sentences)
        rows.append({"source": " ".join(sentences),
                     "summary": f"on {day} {name} went to the {place} and bought a {colour} {thing} ."})
    return rows
