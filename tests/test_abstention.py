"""The abstention rule (metrics.abstained) on outputs where a substring match went
wrong (D8): a phrase inside a name, or inside a longer word, is no abstention."""

import pytest

from harness.evaluate import metrics

CASES = [
    ("The Unknown Guild was founded in 1820.", 0.0),  # D8: a name, not "unknown"
    ("She signed with No Record Records.", 0.0),
    ("The unknownness of the place was its charm.", 0.0),  # inside a longer word
    ("Unknown.", 1.0),  # sentence-initial capital: still an abstention
    ("The answer: Unknown", 1.0),
    ("It is unknown.", 1.0),
    ("I don't know.", 1.0),
    ("I Don't Know", 1.0),  # "I ..." is never a name
    ("The founder is not mentioned in the passages.", 1.0),
    ("I don't know, but probably Paris", 0.0),  # a hedge, then an answer
    ("", 1.0),
    ("Paris", 0.0),
]


@pytest.mark.parametrize("output,expected", CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_abstention(output, expected):
    assert metrics.abstained(output) == expected


def test_a_named_entity_with_an_abstention_word_is_a_hallucination_when_unanswerable():
    assert metrics.hallucinated("The Unknown Guild.", [], answerable=False) == 1.0
