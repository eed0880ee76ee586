"""Demo data for translation: English and a made-up language with its own word order and agreement."""

from __future__ import annotations

import random

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
    noun, plural, definite = rng.choice(list(DEMO_NOUNS)), rng.random() < 0.4, rng.random() < 0.6
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

    English ``subject verb object [preposition noun-phrase]`` becomes ``[preposition noun-phrase ,] subject object
    verb``: the prepositional phrase moves to the front and the verb to the end; adjectives follow their noun. Words
    map one to one, and number agrees: a plural noun takes -en, its determiner and adjective change (lo/los, un/unos,
    -s), and the verb ends in -a after a singular subject and -an after a plural one, wherever the subject ended up.
    For example ``the small dogs chase a ball near the river`` -> ``apud lo rivo , los hundoen petas un balo chasan``.
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
