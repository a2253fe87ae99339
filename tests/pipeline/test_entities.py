"""Entities of a message: cashtags, producer-given entities and gazetteer matching, with false positives."""

from __future__ import annotations

from pathlib import Path

import pytest

from aet.pipeline.entities import EntityExtractor, Gazetteer, cashtags
from tests.conftest import EXAMPLES

GAZETTEER = [
    {
        "id": "$AAPL",
        "names": ["Apple Inc.", "Apple Computer"],
        "aliases": [
            {
                "text": "Apple",
                "case_sensitive": True,
                "context": ["shares", "stock", "iphone", "earnings", "tim cook", "nasdaq"],
                "exclude": ["pie", "juice", "cider", "tree", "orchard"],
            }
        ],
    },
    {"id": "$KO", "names": ["Coca-Cola", "The Coca-Cola Company"]},
    {"id": "$T", "names": ["AT&T"]},
    {"id": "$PG", "names": ["Procter & Gamble", "P&G"]},
    {
        "id": "$TGT",
        "aliases": [{"text": "Target", "case_sensitive": True, "context": ["stores", "retailer", "shares"]}],
    },
    {"id": "$BAC", "names": ["Bank of America"]},
    {"id": "$XYZ", "names": ["Xylo Dynamics"]},
]


@pytest.fixture
def extractor() -> EntityExtractor:
    return EntityExtractor(Gazetteer(GAZETTEER))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$AAPL beats, $msft misses", ["$AAPL", "$MSFT"]),
        ("long $brk.b and $BTC.X", ["$BRK.B", "$BTC.X"]),
        ("wins an $870 million contract, $5B buyback, $1.2bn", []),
        ("price$AAPL is glued, US$AAPL too", []),
        ("$AAPL's guidance; ($TSLA) and $NVDA.", ["$AAPL", "$TSLA", "$NVDA"]),
        ("$AAPL and $aapl again", ["$AAPL"]),
    ],
)
def test_cashtags(text: str, expected: list[str]) -> None:
    assert cashtags(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # unambiguous names: any case, punctuation and possessives do not matter
        ("Apple Inc. raises its dividend", ["$AAPL"]),
        ("apple, inc beats estimates", ["$AAPL"]),
        ("APPLE INC's margins", ["$AAPL"]),
        ("Coca Cola and coca-cola bottlers", ["$KO"]),
        ("AT&T and Procter & Gamble report", ["$T", "$PG"]),
        ("P&G cuts prices", ["$PG"]),
        ("Bank of America upgrades Xylo Dynamics", ["$BAC", "$XYZ"]),
        # an ambiguous alias with context nearby, in its exact case
        ("Apple shares slide after the iPhone recall", ["$AAPL"]),
        ("Tim Cook says Apple will buy back more stock", ["$AAPL"]),
        ("Target stores see weaker traffic", ["$TGT"]),
    ],
)
def test_gazetteer_matches(extractor: EntityExtractor, text: str, expected: list[str]) -> None:
    assert extractor.extract(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I baked an apple pie for the office",  # lowercase: the exact-case alias does not match
        "Apple pie recipe, then stock up on cinnamon",  # exact case and context, but "pie" excludes it
        "Fresh Apple juice prices at the stand",  # excluded word nearby
        "APPLE PIE STOCK CLEARANCE",  # wrong case for the alias
        "Apple announced nothing today",  # ambiguous alias without any context word
        "Our sales target for the quarter was missed",  # "target" in lowercase, no context
        "The Target was missed, shares of nothing",  # exact case and context... but see below
        "Pineapple shares rose",  # no match inside a longer word
        "Applesauce stock",  # no match inside a longer word
        "Americana Bank of Americas",  # word boundaries on multi-word names
        "Coke is it",  # not a configured alias
    ],
)
def test_gazetteer_false_positives(extractor: EntityExtractor, text: str) -> None:
    found = extractor.extract(text)
    if text.startswith("The Target"):
        # Context rules are lexical: "Target" in its exact case with "shares" nearby counts.
        # This documents the limit of the rules rather than hiding it.
        assert found == ["$TGT"]
    else:
        assert found == []


def test_context_can_come_from_the_message_entities(extractor: EntityExtractor) -> None:
    """A cashtag of the same company is context enough for its ambiguous alias."""
    assert extractor.extract("Apple slides after hours", ["$AAPL"]) == ["$AAPL"]
    assert extractor.extract("$AAPL: Apple slides after hours") == ["$AAPL"]
    assert extractor.extract("Apple slides after hours") == []


def test_producer_entities_are_canonical_and_linked(extractor: EntityExtractor) -> None:
    plain = EntityExtractor()
    # a cashtag with the company's name: one entity, even without a gazetteer
    assert plain.extract("bonds drop 15 points", ["$XYZ", "Xylo Dynamics"]) == ["$XYZ"]
    # two cashtags: names cannot be attributed, so they stay entities of their own
    assert plain.extract("merger talk", ["$XYZ", "$ABC", "Xylo Dynamics"]) == ["$XYZ", "$ABC", "Xylo Dynamics"]
    assert plain.extract("x", ["$xyz", " Foo   Corp "]) == ["$XYZ"]
    assert plain.extract("x", ["Foo   Corp"]) == ["Foo Corp"]
    # the gazetteer knows names and bare tickers
    assert extractor.extract("x", ["Apple Inc", "AAPL"]) == ["$AAPL"]
    assert extractor.extract("x", ["coca-cola"]) == ["$KO"]
    # producer entities first, then cashtags, then names in the text; each once
    assert extractor.extract("$MSFT and Apple Inc. vs $AAPL", ["$NVDA"]) == ["$NVDA", "$MSFT", "$AAPL"]


def test_longest_name_wins() -> None:
    g = Gazetteer([{"id": "$BAC", "names": ["Bank of America"]}, {"id": "AMERICA", "names": ["America"]}])
    assert g.find("Bank of America and America") == ["$BAC", "AMERICA"]
    assert g.find("Bank of America") == ["$BAC"]


def test_gazetteer_files_load(tmp_path: Path) -> None:
    g = Gazetteer.load(EXAMPLES / "gazetteer.yaml")
    assert len(g) >= 5
    assert g.canonical("Xylo Dynamics") == "$XYZ"
    path = tmp_path / "g.json"
    path.write_text('{"entities": [{"id": "$ko", "names": ["Coca-Cola"]}]}')
    assert Gazetteer.load(path).find("Coca-Cola beats") == ["$KO"]
    path.write_text('"not a list"')
    with pytest.raises(ValueError):
        Gazetteer.load(path)
    with pytest.raises(ValueError, match="unknown_key"):
        Gazetteer([{"id": "$X", "unknown_key": 1}])
