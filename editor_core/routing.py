"""A routed edit memory: each question runs on the base weights plus at most one edit.

Summing every edit's delta into the shared weights collapses a model after a
few edits (docs/RESULTS.md, "Edits that accumulate"). A routed memory keeps
each edit's delta apart, with the questions that define its scope, and decides
once per request, on the user's question, which edit (if any) the question
falls under (GRACE and WISE route the same way, on activations). A question
outside every scope runs on the exact base weights; one inside runs on the
base plus that one edit's delta. No two deltas are ever added together, so
the thousandth edit sees the same model as the first, and removing an edit
is removing its entry.

The key of a question is lexical: its word set weighted by inverse document
frequency (idf, from a fixed table; `IdfTable`), compared by cosine. We tried
the model's own hidden states first (mean or last token, layers 2 to 30):
rephrasings found their own edit among 1,000 at best 86 % of the time, and
unrelated questions sat as close as the rephrasings did. Words carry what an
edit's scope is about, the subject's name above all: with idf^1.5 weights the
nearest edit of a held-back rephrasing is its own in 99 % of validation
records (docs/RESULTS.md has the table). The question's text is the same
whether it arrives as a bare prompt or as a user turn in a chat template, so
both route alike; GRACE keys on the last prompt token's activation, which a
chat template moves.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from .delta import Delta

ARTIFACT = Path(__file__).parent / "artifacts" / "router-idf.json"
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> set[str]:
    """The lower-cased word set of a text (its key ignores order and repeats)."""
    return set(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class IdfTable:
    """Document frequencies of words over a fixed reference set of questions.

    A word the table has never seen gets the largest idf: in an edit's
    question that is usually the subject's name, exactly what should decide."""

    n_docs: int
    df: dict[str, int]

    def idf(self, word: str) -> float:
        return math.log((self.n_docs + 1) / (self.df.get(word, 0) + 1))

    @classmethod
    def build(cls, texts: Iterable[str], *, min_df: int = 2) -> "IdfTable":
        df: Counter[str] = Counter()
        n = 0
        for t in texts:
            df.update(words(t))
            n += 1
        return cls(n, {w: c for w, c in sorted(df.items()) if c >= min_df})

    def save(self, path: str | Path, *, source: str) -> None:
        Path(path).write_text(json.dumps({"n_docs": self.n_docs, "source": source, "df": self.df}, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path = ARTIFACT) -> "IdfTable":
        raw = json.loads(Path(path).read_text())
        return cls(int(raw["n_docs"]), {str(k): int(v) for k, v in raw["df"].items()})

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps([self.n_docs, self.df], sort_keys=True).encode()).hexdigest()


@lru_cache(maxsize=1)
def default_idf() -> IdfTable:
    """The shipped table, read once per process (every version's memory shares it; it is never changed)."""
    return IdfTable.load()


@dataclass(frozen=True)
class RouterConfig:
    # Cosine similarity a question needs with an edit's scope to run on that edit.
    # Chosen on validation records (bench/lifelong.py --choose-threshold): the
    # value where about 1-2 % of unrelated questions reach some edit of 1,000.
    threshold: float = 0.44
    power: float = 1.5  # weight of a word: idf ** power; sharper than idf alone


def key(text: str, idf: IdfTable, power: float) -> dict[str, float]:
    """The unit-length sparse vector of a question."""
    v = {w: idf.idf(w) ** power for w in words(text)}
    norm = math.sqrt(sum(x * x for x in v.values()))
    return {w: x / norm for w, x in v.items()} if norm else {}


@dataclass(frozen=True)
class MemoryEntry:
    """One active edit: its delta and the questions that define its scope."""

    edit_id: str
    delta: Delta
    scope: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    entry: MemoryEntry | None
    similarity: float  # with the nearest edit's scope, whether or not it fired
    index: int = -1  # the entry's place in the memory; -1 when none fired


@dataclass
class RoutedMemory:
    """The ordered active edits and their keys. Built from the ordered list
    alone, so the same list always gives the same memory and the same routes."""

    entries: list[MemoryEntry] = field(default_factory=list)
    idf: IdfTable = field(default_factory=lambda: default_idf())
    config: RouterConfig = field(default_factory=RouterConfig)

    def __post_init__(self) -> None:
        self._owner: list[int] = []  # key number -> entry number
        self._index: dict[str, list[tuple[int, float]]] = defaultdict(list)  # word -> (key number, weight)
        for i, entry in enumerate(self.entries):
            self._add_keys(i, entry)

    def _add_keys(self, i: int, entry: MemoryEntry) -> None:
        for text in entry.scope:
            k = len(self._owner)
            self._owner.append(i)
            for w, x in key(text, self.idf, self.config.power).items():
                self._index[w].append((k, x))

    def append(self, entry: MemoryEntry) -> None:
        self.entries.append(entry)
        self._add_keys(len(self.entries) - 1, entry)

    def __len__(self) -> int:
        return len(self.entries)

    def route(self, question: str) -> Route:
        """The edit whose scope holds `question`, if any. Each scope text is a
        key of its own (cosine with the question); ties go to the later edit,
        so a newer edit of the same question wins over an older one."""
        sims: dict[int, float] = defaultdict(float)
        for w, x in key(question, self.idf, self.config.power).items():
            for k, y in self._index.get(w, ()):
                sims[k] += x * y
        best_i, best = -1, 0.0
        for k, s in sims.items():
            i = self._owner[k]
            if s > best + 1e-12 or (abs(s - best) <= 1e-12 and i > best_i):
                best_i, best = i, s
        if best_i < 0 or best < self.config.threshold:
            return Route(None, best)
        return Route(self.entries[best_i], best, best_i)

    def sha256(self) -> str:
        """What the memory holds, in order: each edit's id, delta and scope."""
        h = hashlib.sha256()
        for e in self.entries:
            h.update(json.dumps([e.edit_id, e.delta.sha256(), list(e.scope)]).encode())
        return h.hexdigest()


def scope_of(prompt: str, rephrasings: Sequence[str] = ()) -> tuple[str, ...]:
    """The questions an edit is keyed on: its prompt and the rephrasings its caller gave."""
    return tuple(dict.fromkeys([prompt, *rephrasings]))
