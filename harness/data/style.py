"""Style data and the style classifier.

Style pairs are (plain, styled) sentences: modern English and the register to learn.
`builtin_pairs(n, seed)` writes them from templates in a King James register ("thou
art", "hath", "unto"), so a run needs no files; `load_pairs(folder)` reads a corpus in
the layout of `../shared/data/bible_style` (train/dev/test.jsonl with `plain` and
`styled`), which is also the layout for a user's own pairs.

`StyleClassifier.fit(plain, styled)` trains a character n-gram TF-IDF logistic
regression (scikit-learn) to tell the two sides apart; `score(texts)` is the
probability of the styled side. Its accuracy on held-out pairs is reported with every
style result, so the style score can be trusted as far as that number allows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from harness.data.items import DataError, read_jsonl


@dataclass(frozen=True)
class StylePair:
    id: str
    plain: str
    styled: str


_SLOTS = {
    "noun": [
        "house",
        "brother",
        "servant",
        "field",
        "heart",
        "word",
        "city",
        "vineyard",
        "flock",
        "bread",
        "sword",
        "mother",
        "king",
        "people",
        "gate",
        "law",
    ],
    "adj": ["kind", "great", "weary", "faithful", "wise", "poor", "strong", "afraid", "glad", "holy"],
    "place": ["city", "mountain", "temple", "river", "wilderness", "valley", "field", "sea"],
    "verb": ["keep", "love", "forget", "take", "hear", "leave", "bless", "seek"],
    "done": ["fallen", "departed", "returned", "perished", "spoken", "risen"],
    "name": ["Daniel", "Ruth", "Samuel", "Miriam", "Jonah", "Leah"],
    "time": ["morning", "evening", "sabbath", "year"],
}

# (plain, styled) templates; {Verb} is {verb} capitalised.
_TEMPLATES = [
    ("Why do you {verb} the {noun}?", "Why dost thou {verb} the {noun}?"),
    ("You are {adj}, and your {noun} is with you.", "Thou art {adj}, and thy {noun} is with thee."),
    ("He says that the {noun} has {done}.", "He saith that the {noun} hath {done}."),
    ("Listen to me, my {noun}.", "Hearken unto me, my {noun}."),
    ("Look, the {noun} is coming to the {place}.", "Behold, the {noun} cometh unto the {place}."),
    ("She goes to the {place} every {time}.", "She goeth unto the {place} every {time}."),
    ("Where are you going, {name}?", "Whither goest thou, {name}?"),
    ("Do not {verb} your {noun}.", "{Verb} not thy {noun}."),
    ("You will {verb} the {noun} in the {place}.", "Thou shalt {verb} the {noun} in the {place}."),
    ("They gave the {noun} to the king.", "And they gave the {noun} unto the king."),
    ("Does he know the {noun}?", "Knoweth he the {noun}?"),
    ("I have seen your {noun} in the {place}.", "I have seen thy {noun} in the {place}."),
    ("The {noun} of the {place} has {done}.", "The {noun} of the {place} hath {done}."),
    ("Your {noun} is {adj}, {name}.", "Thy {noun} is {adj}, O {name}."),
]


def builtin_pairs(n: int, *, seed: int) -> list[StylePair]:
    """`n` distinct template-made pairs (seeded)."""
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        plain_t, styled_t = rng.choice(_TEMPLATES)
        fill = {k: rng.choice(v) for k, v in _SLOTS.items()}
        fill["Verb"] = fill["verb"].capitalize()
        plain = plain_t.format(**fill)
        if plain in seen:
            continue
        seen.add(plain)
        out.append(StylePair(id=f"s{len(out):04d}", plain=plain, styled=styled_t.format(**fill)))
    return out


def load_pairs(folder: str | Path, split: str) -> list[StylePair]:
    """The `split` pairs of a corpus folder (train.jsonl / dev.jsonl / test.jsonl)."""
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(
            f"scenario.style_data: {path} not found (a folder with train.jsonl, dev.jsonl and "
            'test.jsonl of {"plain": ..., "styled": ...} lines, or \'builtin\')'
        )
    pairs = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row.get("plain"), str) or not isinstance(row.get("styled"), str):
            raise DataError(f"{path}:{lineno}: 'plain' and 'styled' must be strings")
        pairs.append(StylePair(id=str(row.get("id", f"{split}{lineno}")), plain=row["plain"], styled=row["styled"]))
    if not pairs:
        raise DataError(f"{path}: no pairs")
    return pairs


class StyleClassifier:
    """Plain (0) vs styled (1), from character 2-4-grams."""

    def __init__(self, *, seed: int = 0):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.model = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
            LogisticRegression(max_iter=1000, random_state=seed),
        )

    def fit(self, plain: list[str], styled: list[str]) -> "StyleClassifier":
        self.model.fit(list(plain) + list(styled), [0] * len(plain) + [1] * len(styled))
        return self

    def score(self, texts: list[str]) -> list[float]:
        """Probability that each text is in the styled register."""
        return [float(p) for p in self.model.predict_proba(list(texts))[:, 1]]

    def accuracy(self, plain: list[str], styled: list[str]) -> float:
        """Held-out accuracy on both sides of some pairs."""
        predicted = self.model.predict(list(plain) + list(styled))
        truth = [0] * len(plain) + [1] * len(styled)
        return float(sum(int(a == b) for a, b in zip(predicted, truth)) / len(truth))
