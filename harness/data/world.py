"""The built-in fictional world: facts no pretrained model can know.

`generate_world(seed=..., n_people=..., ...)` invents people, organisations and places
with attributes (birthplace, employer, founding year, river, ...), all names made from
seeded syllables, and returns a `harness.data.items.Dataset` holding:

- one document per entity (natural sentences, one per fact, each naming the entity);
- the training text: the documents plus `paraphrases` restatements of each fact, drawn
  from other sentence templates and framings;
- `sft` training questions (two wordings per fact) with the value as the answer;
- evaluation questions in a third wording used nowhere in training, each with gold
  answers, a 4-way multiple-choice form whose distractors are other values of the same
  attribute, and the sentence holding the answer (to score retrieval recall);
- unanswerable questions about entities that do not exist.

The same seed gives the same world, byte for byte.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from harness.data.items import DataError, Dataset, Document, Question

_ONSETS = [
    "b",
    "br",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "vr",
    "z",
    "th",
    "sk",
    "j",
]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "ia"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "k", "nd", "rn", "sk", "v"]

OCCUPATIONS = [
    "glassblower",
    "cartographer",
    "beekeeper",
    "clockmaker",
    "ferry pilot",
    "archivist",
    "lighthouse keeper",
    "rope maker",
    "astronomer",
    "salt miner",
    "puppeteer",
    "bookbinder",
    "falconer",
    "tea blender",
    "bell founder",
]
INSTRUMENTS = [
    "the hurdy-gurdy",
    "the oboe",
    "the zither",
    "the bagpipes",
    "the harp",
    "the cello",
    "the banjo",
    "the accordion",
    "the marimba",
    "the lute",
]
INDUSTRIES = [
    "shipbuilding",
    "paper milling",
    "glassworks",
    "textile dyeing",
    "cheese making",
    "lantern making",
    "map printing",
    "organ building",
    "candle making",
    "ink making",
]
PRODUCTS = [
    "blue salt",
    "copper kettles",
    "smoked eel",
    "amber beads",
    "felt hats",
    "plum brandy",
    "slate roof tiles",
    "woven baskets",
    "honey cakes",
    "iron nails",
]


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: how it is stated, asked in training, and asked in evaluation."""

    name: str
    statements: tuple[str, ...]  # statements[0] is used in the entity's document
    train_questions: tuple[str, ...]  # sft training wordings
    eval_question: str  # the held-out wording, used only for evaluation


ATTRIBUTES = {
    "person": (
        Attribute(
            "birthplace",
            (
                "{e} was born in {v}.",
                "{e}'s birthplace is {v}.",
                "{e} came into the world in {v}.",
                "{v} is the hometown of {e}.",
                "The place where {e} was born is {v}.",
            ),
            ("Where was {e} born?", "In which town was {e} born?"),
            "What is the name of the hometown of {e}?",
        ),
        Attribute(
            "occupation",
            (
                "{e} works as a {v}.",
                "By trade, {e} is a {v}.",
                "{e} earns a living as a {v}.",
                "The profession of {e} is {v}.",
                "{e} has spent a career as a {v}.",
            ),
            ("What does {e} do for a living?", "What is the job of {e}?"),
            "Which occupation does {e} have?",
        ),
        Attribute(
            "employer",
            (
                "{e} is employed by {v}.",
                "{e} works for {v}.",
                "The employer of {e} is {v}.",
                "{v} employs {e}.",
                "{e} draws a salary from {v}.",
            ),
            ("Who employs {e}?", "Which organisation does {e} work for?"),
            "For which company is {e} working?",
        ),
        Attribute(
            "instrument",
            (
                "{e} plays {v}.",
                "In spare hours, {e} plays {v}.",
                "The instrument {e} plays is {v}.",
                "{e} is an amateur player of {v}.",
                "{e} practises {v} every evening.",
            ),
            ("Which instrument does {e} play?", "What instrument is played by {e}?"),
            "What musical instrument is {e} known to play?",
        ),
    ),
    "organisation": (
        Attribute(
            "founded",
            (
                "{e} was founded in {v}.",
                "{e} dates from {v}.",
                "The founding year of {e} is {v}.",
                "{e} opened its doors in {v}.",
                "In {v}, {e} was established.",
            ),
            ("When was {e} founded?", "In which year was {e} established?"),
            "What year did {e} start operating?",
        ),
        Attribute(
            "headquarters",
            (
                "{e} has its headquarters in {v}.",
                "{e} is based in {v}.",
                "The head office of {e} is in {v}.",
                "{v} is home to the headquarters of {e}.",
                "{e} runs its business from {v}.",
            ),
            ("Where is {e} headquartered?", "In which town is {e} based?"),
            "In what place is the head office of {e} located?",
        ),
        Attribute(
            "industry",
            (
                "{e} works in {v}.",
                "The trade of {e} is {v}.",
                "{e} makes its money from {v}.",
                "{e} is a {v} business.",
                "{v} is the industry of {e}.",
            ),
            ("What industry is {e} in?", "What is the trade of {e}?"),
            "Which line of business does {e} pursue?",
        ),
    ),
    "place": (
        Attribute(
            "river",
            (
                "{e} lies on the river {v}.",
                "The river {v} flows through {e}.",
                "{e} was built on the banks of the {v}.",
                "The {v} is the river of {e}.",
                "Boats on the {v} pass through {e}.",
            ),
            ("Which river flows through {e}?", "On which river does {e} lie?"),
            "What is the name of the river that runs through {e}?",
        ),
        Attribute(
            "product",
            (
                "{e} is famous for {v}.",
                "{e} is known for its {v}.",
                "Travellers visit {e} for its {v}.",
                "The best-known product of {e} is {v}.",
                "Much of the {v} sold in the region comes from {e}.",
            ),
            ("What is {e} famous for?", "What product is {e} known for?"),
            "For which local product is {e} renowned?",
        ),
        Attribute(
            "region",
            (
                "{e} is a town in the province of {v}.",
                "{e} lies in {v} province.",
                "The province of {e} is {v}.",
                "{v} is the province that contains {e}.",
                "{e} belongs to the province of {v}.",
            ),
            ("In which province is {e}?", "Which province contains {e}?"),
            "To what province does {e} belong?",
        ),
    ),
}

FRAMINGS = (
    "{s}",
    "According to local records, {s}",
    "It is well known that {s}",
    "As the archives confirm, {s}",
    "People often mention that {s}",
)


# General knowledge a small model may already hold, never stated in the world's documents:
# (question, answer, three distractors). The base model's own answers decide which of them
# it knows (see knowledge.py); fine-tuning that breaks them is a regression, and retrieval
# that buries them under unrelated passages is one too.
GENERAL_KNOWLEDGE = (
    ("What is the capital of France?", "Paris", ("London", "Berlin", "Madrid")),
    ("What is the capital of Japan?", "Tokyo", ("Beijing", "Seoul", "Bangkok")),
    ("What is the capital of Italy?", "Rome", ("Paris", "Vienna", "Athens")),
    ("What is the largest planet in the solar system?", "Jupiter", ("Saturn", "Earth", "Mars")),
    ("Which planet is known as the Red Planet?", "Mars", ("Venus", "Jupiter", "Mercury")),
    ("What is the chemical symbol for water?", "H2O", ("CO2", "NaCl", "O2")),
    ("How many days are there in a week?", "seven", ("five", "six", "eight")),
    ("What colour is the sky on a clear day?", "blue", ("green", "red", "yellow")),
    ("Who wrote the play Romeo and Juliet?", "Shakespeare", ("Dickens", "Tolstoy", "Homer")),
    ("What is the largest ocean on Earth?", "Pacific", ("Atlantic", "Indian", "Arctic")),
    ("What gas do plants absorb from the air?", "carbon dioxide", ("oxygen", "nitrogen", "helium")),
    ("What is the freezing point of water in degrees Celsius?", "0", ("10", "32", "100")),
    ("Which animal is known as the king of the jungle?", "lion", ("tiger", "elephant", "wolf")),
    ("What is the capital of Germany?", "Berlin", ("Munich", "Vienna", "Paris")),
    ("On which continent is Egypt?", "Africa", ("Asia", "Europe", "South America")),
    ("What is the opposite of hot?", "cold", ("warm", "wet", "dark")),
    ("How many legs does a spider have?", "eight", ("six", "four", "ten")),
    ("What do bees make?", "honey", ("milk", "silk", "wax paper")),
    ("Which star is at the centre of our solar system?", "the Sun", ("Sirius", "Polaris", "the Moon")),
    ("What is the capital of Spain?", "Madrid", ("Barcelona", "Lisbon", "Rome")),
)


def general_questions(n: int, *, seed: int) -> list[Question]:
    """`n` general-knowledge questions (4-way choices, shuffled by `seed`)."""
    if n > len(GENERAL_KNOWLEDGE):
        raise DataError(f"data.world.n_general: at most {len(GENERAL_KNOWLEDGE)}, got {n}")
    rng = random.Random(seed)
    out = []
    for k, (question, answer, distractors) in enumerate(GENERAL_KNOWLEDGE[:n]):
        choices = [*distractors, answer]
        rng.shuffle(choices)
        out.append(
            Question(
                id=f"g{k:04d}",
                question=question,
                answers=(answer,),
                choices=tuple(choices),
                answer_index=choices.index(answer),
                in_corpus=False,
            )
        )
    return out


def max_paraphrases() -> int:
    """How many distinct restatements of one fact the templates can produce."""
    return min(len(a.statements) for attrs in ATTRIBUTES.values() for a in attrs) * len(FRAMINGS) - 1


_COMMON_FIRST_WORDS = ("The ", "In ", "By ", "Boats ", "Travellers ", "Much ")


def _state(template: str, entity: str, value: str) -> str:
    """Fill a statement template; a sentence that opens with a value is capitalised."""
    s = re.sub(r"\ba ([aeiouAEIOU])", r"an \1", template.format(e=entity, v=value))
    return s[0].upper() + s[1:]


_COMMON_NOUN_VALUES = ("occupation", "instrument", "industry", "product")


def _frame(framing: str, template: str, attribute: str, sentence: str) -> str:
    """Wrap a statement in a framing; a common first word is lowered, a name is kept."""
    if framing == "{s}":
        return sentence
    if template.startswith(_COMMON_FIRST_WORDS) or (template.startswith("{v}") and attribute in _COMMON_NOUN_VALUES):
        sentence = sentence[0].lower() + sentence[1:]
    return framing.format(s=sentence)


class Names:
    """Unique invented names; never the same string twice within one world."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def word(self, syllables: int) -> str:
        while True:
            w = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables))
            w = (w + self.rng.choice(_CODAS)).capitalize()
            if w not in self.used and len(w) > 3:
                self.used.add(w)
                return w

    def person(self) -> str:
        return f"{self.word(2)} {self.word(2)}"

    def organisation(self) -> str:
        kind = self.rng.choice(["Works", "Company", "Guild", "Foundry", "Trading House", "Cooperative"])
        return f"{self.word(2)} {kind}"

    def place(self) -> str:
        return self.word(self.rng.choice([2, 3]))


def _pools(rng: random.Random, names: Names, *, n_places: int, n_organisations: int) -> tuple[list, list, dict]:
    """The places, the organisations and every attribute's pool of values."""
    # Value pools hold at least 8 names so every question gets 3 distinct distractors;
    # the first n_places / n_organisations of them are also entities with documents.
    places = [names.place() for _ in range(max(n_places, 8))]
    orgs = [names.organisation() for _ in range(max(n_organisations, 8))]
    rivers = [names.word(2) for _ in range(6)]
    regions = [names.word(3) for _ in range(5)]
    years = [str(y) for y in rng.sample(range(1620, 1990), 12)]
    pools = {
        "birthplace": places,
        "occupation": OCCUPATIONS,
        "employer": orgs,
        "instrument": INSTRUMENTS,
        "founded": years,
        "headquarters": places,
        "industry": INDUSTRIES,
        "river": rivers,
        "product": PRODUCTS,
        "region": regions,
    }
    return places, orgs, pools


def _fact_items(rng, *, seed, fact_id, attr, entity, value, pool, doc_id, paraphrases, train_questions_per_fact):
    """One fact's evidence sentence, restatements, training questions and its evaluation
    question (three distractors from the attribute's pool)."""
    evidence = _state(attr.statements[0], entity, value)
    variants = [(s, f) for s in range(len(attr.statements)) for f in range(len(FRAMINGS)) if (s, f) != (0, 0)]
    # Restatements come from a generator of their own, so the paraphrase count
    # changes the training text only: the world (and every question) stays the
    # same, and the first k restatements of a fact are the same for every k.
    random.Random(f"{seed}/{fact_id}").shuffle(variants)
    texts = [
        _frame(FRAMINGS[f], attr.statements[s], attr.name, _state(attr.statements[s], entity, value))
        for s, f in variants[:paraphrases]
    ]
    train_qs = [
        Question(id=f"{fact_id}-t{j}", question=tq.format(e=entity), answers=(value,), doc_id=doc_id, evidence=evidence)
        for j, tq in enumerate(attr.train_questions[:train_questions_per_fact])
    ]
    distractors = rng.sample([v for v in dict.fromkeys(pool) if v != value], 3)
    choices = distractors + [value]
    rng.shuffle(choices)
    eval_q = Question(
        id=fact_id,
        question=attr.eval_question.format(e=entity),
        answers=(value,),
        choices=tuple(choices),
        answer_index=choices.index(value),
        doc_id=doc_id,
        evidence=evidence,
    )
    return evidence, texts, train_qs, eval_q


def _unanswerable(rng: random.Random, names: Names, n: int, counts: dict[str, int]) -> list[Question]:
    """Questions about invented entities that have no document (no answer exists)."""
    out = []
    for u in range(n):
        kind = rng.choice([k for k, c in counts.items() if c > 0])
        ghost = {"person": names.person, "organisation": names.organisation, "place": names.place}[kind]()
        attr = rng.choice(ATTRIBUTES[kind])
        out.append(Question(id=f"u{u:04d}", question=attr.eval_question.format(e=ghost), answers=(), answerable=False))
    return out


def generate_world(
    *,
    seed: int,
    n_people: int,
    n_organisations: int,
    n_places: int,
    paraphrases: int,
    train_questions_per_fact: int = 2,
    n_unanswerable: int = 0,
    n_general: int = 0,
) -> Dataset:
    """Invent a world and return its documents, training material and questions."""
    if paraphrases > max_paraphrases():
        raise DataError(
            f"data.paraphrases (or data.world.paraphrases): the world has at most {max_paraphrases()} "
            f"restatements per fact, got {paraphrases}"
        )
    rng = random.Random(seed)
    names = Names(rng)
    places, orgs, pools = _pools(rng, names, n_places=n_places, n_organisations=n_organisations)
    entities = (
        [("person", names.person()) for _ in range(n_people)]
        + [("organisation", o) for o in orgs[:n_organisations]]
        + [("place", p) for p in places[:n_places]]
    )

    facts, documents, train_texts, train_qs, eval_qs = [], [], [], [], []
    for e_idx, (kind, entity) in enumerate(entities):
        doc_id = f"doc{e_idx:03d}"
        sentences = []
        for attr in ATTRIBUTES[kind]:
            value = rng.choice(pools[attr.name])
            fact_id = f"f{len(facts):04d}"
            facts.append(
                {
                    "id": fact_id,
                    "entity": entity,
                    "kind": kind,
                    "attribute": attr.name,
                    "value": value,
                    "doc_id": doc_id,
                }
            )
            evidence, texts, tqs, eval_q = _fact_items(
                rng,
                seed=seed,
                fact_id=fact_id,
                attr=attr,
                entity=entity,
                value=value,
                pool=pools[attr.name],
                doc_id=doc_id,
                paraphrases=paraphrases,
                train_questions_per_fact=train_questions_per_fact,
            )
            sentences.append(evidence)
            train_texts += texts
            train_qs += tqs
            eval_qs.append(eval_q)
        documents.append(Document(id=doc_id, text=" ".join(sentences)))

    counts = {"person": n_people, "organisation": n_organisations, "place": n_places}
    eval_qs += _unanswerable(rng, names, n_unanswerable, counts)
    eval_qs += general_questions(n_general, seed=seed)

    return Dataset(
        documents=tuple(documents),
        questions=tuple(eval_qs),
        train_texts=tuple(d.text for d in documents) + tuple(train_texts),
        train_questions=tuple(train_qs),
        facts=tuple(facts),
    )
