"""Which entities a message is about: cashtags, the producer's entities, and a gazetteer of company names.

Three sources, merged into one set of canonical entity names per message:

- **cashtags** in the text (``$AAPL``, ``$brk.b``), upper-cased; dollar amounts
  (``$870 million``, ``$5B``) are not cashtags because a ticker starts with a letter;
- **entities given by the producer** (``Message.entities``): cashtags are
  upper-cased, names that the gazetteer knows become its canonical id, and when the
  producer lists exactly one cashtag, the other names it lists are taken as that
  company's names for this message (``["$XYZ", "Xylo Dynamics"]`` is one entity);
- a **gazetteer** of company names and aliases matched in the text on word
  boundaries, ignoring punctuation (``Apple Inc.`` = ``Apple, Inc`` = ``apple inc``;
  ``Coca-Cola`` = ``Coca Cola``; a possessive ``Apple's`` matches ``Apple``). An
  ambiguous alias ("Apple", "Target", "Shell") can require its exact case, and
  context words nearby (``context``) and/or no excluding words nearby (``exclude``),
  so "Apple shares slide" is Apple Inc. and "apple pie" is not.

A gazetteer file is YAML or JSON: a list of entries (or ``{"entities": [...]}``)::

    - id: $AAPL                      # the canonical entity alerts are about
      names: [Apple Inc, Apple Computer]   # unambiguous: any case, word-bounded
      aliases:                       # ambiguous: rules decide
        - text: Apple
          case_sensitive: true       # "Apple", not "apple" or "APPLE"
          context: [shares, stock, iphone, earnings, tim cook]   # one of these nearby...
          exclude: [pie, juice, cider, tree]                     # ...and none of these
          window: 4                  # "nearby" = within 4 words either side
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

# A ticker starts with a letter (so "$870" and "$5B" are amounts, not tickers), has at most
# six letters/digits and may carry a share-class or exchange suffix (BRK.B, BTC.X, RDS-A).
CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,5}(?:[.\-][A-Za-z]{1,2})?)(?![\w$])")
_CASHTAG_FULL = re.compile(r"\$?[A-Za-z][A-Za-z0-9]{0,5}(?:[.\-][A-Za-z]{1,2})?")
# Words of letters/digits (with an optional apostrophe tail: Macy's, O'Reilly), and "&" which
# is part of names like AT&T or Procter & Gamble. Everything else is a boundary.
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|&")
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)


def _tokens(text: str) -> list[str]:
    """Word tokens with possessive ``'s`` removed: ``"Apple's Q3, Inc."`` -> ``["Apple", "Q3", "Inc"]``."""
    out = []
    for t in _TOKEN.findall(text):
        t = _POSSESSIVE.sub("", t)
        if t:
            out.append(t)
    return out


def normalize_cashtag(tag: str) -> str:
    """``aapl`` / ``$aapl`` -> ``$AAPL``."""
    return "$" + tag.lstrip("$").upper()


def is_cashtag(value: str) -> bool:
    return value.startswith("$") and _CASHTAG_FULL.fullmatch(value) is not None


def cashtags(text: str) -> list[str]:
    """Cashtags in ``text``, normalized, in order of first appearance."""
    seen: dict[str, None] = {}
    for m in CASHTAG.finditer(text):
        seen.setdefault(normalize_cashtag(m.group(1)), None)
    return list(seen)


class Alias(BaseModel):
    """One way of writing a company's name, with the rules that make an ambiguous one count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    case_sensitive: bool = False
    context: list[str] = Field(default_factory=list, description="at least one must occur within `window` words")
    exclude: list[str] = Field(default_factory=list, description="none may occur within `window` words")
    window: int = Field(default=4, ge=1, le=50)


class GazetteerEntry(BaseModel):
    """A company: its canonical id, unambiguous names and rule-bound aliases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    names: list[str] = Field(default_factory=list)
    aliases: list[Alias] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _canonical(cls, value: str) -> str:
        value = " ".join(value.split())
        return normalize_cashtag(value) if is_cashtag(value) else value

    @field_validator("aliases", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"text": v} if isinstance(v, str) else v for v in value]
        return value


@dataclass(frozen=True)
class _Pattern:
    tokens: tuple[str, ...]  # lower-cased unless case_sensitive
    entity: str
    case_sensitive: bool
    context: tuple[tuple[str, ...], ...]
    exclude: tuple[tuple[str, ...], ...]
    window: int


def _phrase(text: str) -> tuple[str, ...]:
    return tuple(t.lower() for t in _tokens(text))


class Gazetteer:
    """Company names and aliases, matched on word boundaries in message texts."""

    def __init__(self, entries: Iterable[GazetteerEntry | dict[str, Any]] = ()) -> None:
        self.entries = [e if isinstance(e, GazetteerEntry) else GazetteerEntry.model_validate(e) for e in entries]
        self._by_first: dict[str, list[_Pattern]] = {}
        self._exact: dict[tuple[str, ...], str] = {}  # any name or alias -> id, for producer-given names
        for entry in self.entries:
            self._exact[_phrase(entry.id)] = entry.id
            for name in entry.names:
                self._add(_Pattern(_phrase(name), entry.id, False, (), (), 1))
            for alias in entry.aliases:
                toks = tuple(_tokens(alias.text)) if alias.case_sensitive else _phrase(alias.text)
                self._add(
                    _Pattern(
                        toks,
                        entry.id,
                        alias.case_sensitive,
                        tuple(p for p in (_phrase(c) for c in alias.context) if p),
                        tuple(p for p in (_phrase(c) for c in alias.exclude) if p),
                        alias.window,
                    )
                )
                self._exact.setdefault(_phrase(alias.text), entry.id)
        for patterns in self._by_first.values():
            patterns.sort(key=lambda p: -len(p.tokens))  # longest match first

    def _add(self, pattern: _Pattern) -> None:
        if not pattern.tokens:
            return
        self._exact.setdefault(tuple(t.lower() for t in pattern.tokens), pattern.entity)
        self._by_first.setdefault(pattern.tokens[0].lower(), []).append(pattern)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, path: str | Path) -> Gazetteer:
        """Read a YAML or JSON gazetteer file (a list of entries, or ``{"entities": [...]}``)."""
        path = Path(path)
        raw = path.read_text(encoding="utf-8")
        data = json.loads(raw) if path.suffix.lower() == ".json" else yaml.safe_load(raw)
        if isinstance(data, dict):
            data = data.get("entities", [])
        if not isinstance(data, list):
            raise ValueError(f"{path}: a gazetteer is a list of entries (or a mapping with 'entities')")
        return cls(data)

    def canonical(self, name: str) -> str | None:
        """The id of an entity written exactly as one of its names or aliases (any case), else ``None``."""
        return self._exact.get(_phrase(name))

    def find(self, text: str, known: Iterable[str] = ()) -> list[str]:
        """Ids of the companies named in ``text``, in order of first mention.

        ``known``: entities already known for this message (its cashtags, the producer's
        entities); a context-bound alias of one of them needs no further context.
        """
        if not self._by_first:
            return []
        known = set(known)
        toks = _tokens(text)
        lower = [t.lower() for t in toks]
        found: dict[str, None] = {}
        i = 0
        while i < len(toks):
            matched = 0
            for p in self._by_first.get(lower[i], ()):
                n = len(p.tokens)
                window = toks[i : i + n] if p.case_sensitive else lower[i : i + n]
                if tuple(window) != p.tokens or not self._rules_hold(p, lower, i, n, found, known):
                    continue
                found.setdefault(p.entity, None)
                matched = n
                break
            i += matched or 1
        return list(found)

    @staticmethod
    def _rules_hold(
        p: _Pattern, lower: Sequence[str], start: int, n: int, found: dict[str, None], known: set[str]
    ) -> bool:
        if not p.context and not p.exclude:
            return True
        lo, hi = max(0, start - p.window), min(len(lower), start + n + p.window)
        near = list(lower[lo:start]) + list(lower[start + n : hi])
        if any(_contains(near, phrase) for phrase in p.exclude):
            return False
        if p.context:
            return p.entity in found or p.entity in known or any(_contains(near, phrase) for phrase in p.context)
        return True


def _contains(tokens: Sequence[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(tokens[i : i + n]) == phrase for i in range(len(tokens) - n + 1))


class EntityExtractor:
    """The canonical entities of one message: cashtags, producer-given entities, gazetteer matches."""

    def __init__(
        self, gazetteer: Gazetteer | None = None, *, text_cashtags: bool = True, link_given_names: bool = True
    ) -> None:
        self.gazetteer = gazetteer or Gazetteer()
        self.text_cashtags = text_cashtags
        self.link_given_names = link_given_names

    def given(self, entities: Sequence[str]) -> list[str]:
        """Canonical forms of the producer's entities."""
        cleaned = [" ".join(str(e).split()) for e in entities]
        cleaned = [e for e in cleaned if e]
        tags = [normalize_cashtag(e) for e in cleaned if is_cashtag(e)]
        single_tag = tags[0] if self.link_given_names and len(set(tags)) == 1 else None
        out: dict[str, None] = {}
        for e in cleaned:
            if is_cashtag(e):
                out.setdefault(normalize_cashtag(e), None)
                continue
            known = self.gazetteer.canonical(e)
            if known is None and e.isupper() and is_cashtag("$" + e) and self.gazetteer.canonical("$" + e):
                known = normalize_cashtag(e)  # a bare ticker the gazetteer knows: AAPL -> $AAPL
            out.setdefault(known or single_tag or e, None)
        return list(out)

    def extract(self, text: str, entities: Sequence[str] = ()) -> list[str]:
        """Every entity of a message, each once, producer-given first."""
        out: dict[str, None] = dict.fromkeys(self.given(entities))
        if self.text_cashtags:
            for tag in cashtags(text):
                out.setdefault(tag, None)
        for e in self.gazetteer.find(text, known=out):
            out.setdefault(e, None)
        # A bare ticker from the producer next to its cashtag is the same entity: TSLA + $TSLA -> $TSLA.
        return [e for e in out if not (e.isupper() and "$" + e in out)]
