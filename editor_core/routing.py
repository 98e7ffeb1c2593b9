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

Words shared by chance are what the cosine alone gets wrong: with 1,000 edits
held, "George Seward is native to" reached the edit of "William H. Seward was
native to", "USS Denver was named after" that of "Denver International
Airport". So each key also carries its subject (given with the edit, or
guessed from the question's capitalized names, `guess_subject`), and a
question reaches a key only if it holds every word of that subject. On
validation this kept 99 % of held-back rephrasings routing home and left no
unrelated prompt firing except those that name an edited subject
(docs/RESULTS.md, "The router's subject check").

A question about another relation of an edited subject names the subject too
("What is the official language of Peru?" beside the edit "The capital of
Peru is"), and a refit that learned "Peru -> Quito" often answers it "Quito".
So a key also refuses a question that names another relation: one that holds
every word of a relation label the key's own question does not use (a fixed
set, `RelationTable`, mined from the editor's training questions: "official
language", "place of birth") and none of the key's own relation words
(`RouterConfig.relation_check`). A refused question goes to the next key that
takes it, or to the base weights.
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
RELATIONS_ARTIFACT = Path(__file__).parent / "artifacts" / "router-relations.json"
_EPS = 1e-9  # a cosine's rounding, below a threshold: a key's cosine with its own question is 1 - 2e-16 (a threshold of 1 takes it)
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


# Words that name no relation: function words, the "s" of a possessive ("Peru's"), and "name", which
# Wikidata-style questions put before most relations ("The name of the founder of X is").
RELATION_GLUE = frozenset(
    "of the a an is was in what which who where by to name associated with are does did do has had been for on at as and or "
    "that this s".split()
)


def relation_words(question: str, subject: frozenset[str] | set[str]) -> set[str]:
    """The words of a question that may name its relation: all but the subject's and `RELATION_GLUE`."""
    return words(question) - set(subject) - RELATION_GLUE


@dataclass(frozen=True)
class RelationTable:
    """Relation labels, each a word set ("birth place", "official language"), from
    questions whose subject is known: a question less its subject's words and
    `RELATION_GLUE`. The router refuses, for an edit, a question that holds every
    word of a label the edit's own question does not use, and none of the edit's
    own relation words."""

    labels: tuple[frozenset[str], ...]

    @classmethod
    def build(cls, questions: Iterable[tuple[str, str]]) -> "RelationTable":
        """From (question, subject) pairs; each distinct non-empty label once, in first-seen order."""
        labels = (frozenset(relation_words(q.replace(s, " ") if s else q, words(s))) for q, s in questions)
        return cls(tuple(dict.fromkeys(label for label in labels if label)))

    def save(self, path: str | Path, *, source: str) -> None:
        rows = ",\n".join("    " + json.dumps(sorted(label)) for label in self.labels)  # a label per line
        Path(path).write_text(f'{{\n  "source": {json.dumps(source)},\n  "labels": [\n{rows}\n  ]\n}}\n')

    @classmethod
    def load(cls, path: str | Path = RELATIONS_ARTIFACT) -> "RelationTable":
        return cls(tuple(frozenset(label) for label in json.loads(Path(path).read_text())["labels"]))


@lru_cache(maxsize=1)
def default_relations() -> RelationTable:
    """The shipped relation labels, read once per process."""
    return RelationTable.load()


@dataclass(frozen=True)
class RouterConfig:
    # Cosine similarity a question needs with one of an edit's keys to run on that edit,
    # once it names the key's subject. Chosen on 1,000 validation records (bench/router_keys.py):
    # with the subject check, 0.3 sends 99.6 % of held-back rephrasings home, and the only
    # unrelated prompts that fire (1.2 %) name an edited subject; 0.44 sends 96.7 % home.
    threshold: float = 0.3
    power: float = 1.5  # weight of a word: idf ** power; sharper than idf alone
    subject_check: bool = True  # a question must name a key's subject to reach it (off: the cosine alone)
    # A narrow entry (`MemoryEntry.narrow`: a delta fitted on its own questions alone, such as the
    # quick fit an edit is published with before its full refit lands) is reached only by a question
    # that also shares its key's other words: cosine of the two word sets without the subject's words
    # at least this. Chosen on validation word sets (session 19, 1,000 val edits and 300 relval
    # ones): 0.1 lets through 9.5 % of the refit's own other questions about the subject ("Give me
    # one fact about Peru."), 8 % of questions about another relation, 81 % of ZsRE rephrasings and
    # 19 % of CounterFact ones (which mostly share no word with the prompt but the subject).
    narrow_threshold: float = 0.1
    # A key refuses a question whose relation words (`relation_words`) hold every word of a relation
    # label that shares no word with the key's own relation words, and none of the key's own. Chosen
    # on validation word sets (session 20, 1,000 val edits and 300 relval ones): it refuses 99 % of
    # relval's questions about another relation of the edit's subject, and 1.2 % of ZsRE and 1.6 % of
    # CounterFact held-back rephrasings; the cosine with the label above the key's own by 0.3 refused
    # as many relval questions and 2.6 / 3.2 % of rephrasings (by 0.2: 3.0 / 4.0 %).
    relation_check: bool = True


# Capitalized words that open a question without naming anything.
_OPENERS = frozenset(
    "what who whom whose which where when why how the a an in on at of to for is are was were does did do it they "
    "this that these those there here from by with as".split()
)
# Lower-case words a name may hold between capitalized ones ("Venus of Savignano", "Kees van Beijnum").
_JOINERS = frozenset("of de da del della di du des van von der den la le and y al bin ibn".split())
_EDGE = "\"'“”‘’()[]{}"
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)


def guess_subject(question: str) -> str:
    """The longest run of capitalized (or numeric, or camel-case) words in a
    question, joined by a few name particles, without a possessive 's: "What
    sport does Joe DiMaggio play?" -> "Joe DiMaggio", "Who developed the
    iPhone?" -> "iPhone". Empty when the question names nothing."""
    runs: list[list[str]] = []
    run: list[str] = []
    opening = True  # at the start of a sentence
    for raw in question.split():
        token = raw.strip(_EDGE)
        ends = token.endswith((".", "?", "!", ",", ";", ":"))
        token = _POSSESSIVE.sub("", token.rstrip(".?!,;:"))
        # a name may also begin in lower case and be capitalized inside ("iPhone", "eBay", "macOS")
        camel = token[:1].islower() and not token.islower() and "-" not in token  # not "non-English"
        named = bool(token) and (token[0].isupper() or token[0].isdigit() or camel)
        if named and not (opening and not run and token.lower() in _OPENERS):
            run.append(token)
        elif run and token.lower() in _JOINERS:
            run.append(token)
        else:
            if run:
                runs.append(run)
            run = []
        if ends and run:
            runs.append(run)
            run = []
        opening = ends and raw.rstrip(_EDGE).endswith((".", "?", "!"))
    if run:
        runs.append(run)
    for r in runs:
        while r and r[-1].lower() in _JOINERS:
            r.pop()
    best = max(runs, key=lambda r: len(" ".join(r)), default=[])
    return " ".join(best)


def subject_of(prompt: str, subject: str = "") -> str:
    """An edit's subject: as given with it, else guessed from its prompt (`guess_subject`)."""
    return subject.strip() or guess_subject(prompt)


@dataclass(frozen=True)
class Key:
    """One question an edit is keyed on, and the subject a question must name to reach it."""

    question: str
    subject: str = ""  # as given with the edit; empty: guessed from the question

    def required(self) -> frozenset[str]:
        """The words a question must hold to reach this key: the subject's words that the
        key's own question holds (so it always reaches its key), or, when it holds none
        of them, the guessed subject's (none when nothing is named)."""
        own = words(self.question)
        given = words(_POSSESSIVE.sub("", self.subject.strip())) & own
        return frozenset(given or words(guess_subject(self.question)) & own)


def key(text: str | set[str], idf: IdfTable, power: float) -> dict[str, float]:
    """The unit-length sparse vector of a question (or of its word set, already taken)."""
    v = {w: idf.idf(w) ** power for w in (words(text) if isinstance(text, str) else text)}
    norm = math.sqrt(sum(x * x for x in v.values()))
    return {w: x / norm for w, x in v.items()} if norm else {}


# `Delta.meta["scope"]` of a delta fitted on its edit's own questions alone, with nothing about its
# subject kept (`refit.RefitConfig.narrow_scope`, the quick fit): its entry is narrow.
NARROW = "own"


@dataclass(frozen=True)
class MemoryEntry:
    """One active edit: its delta and the questions that define its scope."""

    edit_id: str
    delta: Delta
    scope: tuple[Key, ...]

    @property
    def narrow(self) -> bool:
        """Reached only by questions worded like its own beyond the subject (`RouterConfig.narrow_threshold`):
        its delta answers any question about the subject with the target."""
        return self.delta.meta.get("scope") == NARROW


@dataclass(frozen=True)
class Route:
    entry: MemoryEntry | None
    # with the nearest key the question may reach (it names its subject and asks no other relation; narrow: worded like it), fired or not
    similarity: float
    index: int = -1  # the entry's place in the memory; -1 when none fired


@dataclass
class RoutedMemory:
    """The ordered active edits and their keys. Built from the ordered list
    alone, so the same list always gives the same memory and the same routes."""

    entries: list[MemoryEntry] = field(default_factory=list)
    idf: IdfTable = field(default_factory=lambda: default_idf())
    config: RouterConfig = field(default_factory=RouterConfig)
    relations: RelationTable = field(default_factory=lambda: default_relations())

    def __post_init__(self) -> None:
        self._owner: list[int] = []  # key number -> entry number
        self._required: list[frozenset[str]] = []  # key number -> words a question must hold
        self._subject: list[frozenset[str]] = []  # key number -> its subject's words (what the narrow and relation checks leave out)
        self._rest: dict[int, dict[str, float]] = {}  # narrow key -> its words but the subject's, as a key
        self._index: dict[str, list[tuple[int, float]]] = defaultdict(list)  # word -> (key number, weight)
        self._relation: list[frozenset[str]] = []  # key number -> its own relation words (with the relation check)
        for i, entry in enumerate(self.entries):
            self._add_keys(i, entry)

    def _add_keys(self, i: int, entry: MemoryEntry) -> None:
        for entry_key in entry.scope:
            k = len(self._owner)
            self._owner.append(i)
            self._required.append(entry_key.required() if self.config.subject_check else frozenset())
            subject = entry_key.required()  # (with or without the subject check: the narrow and relation checks compare the rest)
            self._subject.append(subject)
            if entry.narrow:
                self._rest[k] = key(words(entry_key.question) - subject, self.idf, self.config.power)
            if self.config.relation_check:
                self._relation.append(frozenset(relation_words(entry_key.question, subject)))
            for w, x in key(entry_key.question, self.idf, self.config.power).items():
                self._index[w].append((k, x))

    def append(self, entry: MemoryEntry) -> None:
        self.entries.append(entry)
        self._add_keys(len(self.entries) - 1, entry)

    def __len__(self) -> int:
        return len(self.entries)

    def route(self, question: str) -> Route:
        """The edit whose scope holds `question`, if any. Each scope question is a
        key of its own (cosine with the question), reachable only by a question
        that names its subject and asks about no other relation (and, for a narrow
        entry, shares its other words);
        ties go to the later edit, so a newer edit of the same question wins over
        an older one."""
        held = words(question)
        sims: dict[int, float] = defaultdict(float)
        for w, x in key(held, self.idf, self.config.power).items():
            for k, y in self._index.get(w, ()):
                sims[k] += x * y
        best_i, best = -1, 0.0
        for k, s in sims.items():
            i = self._owner[k]
            if not self._required[k] <= held or not (s > best + 1e-12 or (abs(s - best) <= 1e-12 and i > best_i)):
                continue
            if (k in self._rest and not self._worded_like(k, held)) or self._another_relation(k, held):
                continue
            best_i, best = i, s
        if best_i < 0 or best < self.config.threshold - _EPS:
            return Route(None, best)
        return Route(self.entries[best_i], best, best_i)

    def _worded_like(self, k: int, held: set[str]) -> bool:
        """Narrow key k: the question's words but the subject's are near the key's (a key that is all subject: any;
        a key that names nothing: its whole words, as the cosine already compares them)."""
        subject, rest = self._subject[k], self._rest[k]
        if not rest:
            return True
        mine = key(held - subject, self.idf, self.config.power)
        return sum(x * rest.get(w, 0.0) for w, x in mine.items()) >= self.config.narrow_threshold - _EPS

    def _another_relation(self, k: int, held: set[str]) -> bool:
        """Whether the question names a relation key k does not: every word of such a label, and none of key k's own relation words."""
        if not self.config.relation_check:
            return False
        own, mine = self._relation[k], held - self._subject[k] - RELATION_GLUE
        # sharing none of key k's own words, a label the question holds is one key k does not use
        return not mine & own and any(label <= mine for label in self.relations.labels)

    def sha256(self) -> str:
        """What the memory holds, in order: each edit's id, delta (whose hash says whether it is narrow) and scope.
        Like the thresholds, the fixed tables (`IdfTable`, `RelationTable`) are not part of it."""
        h = hashlib.sha256()
        for e in self.entries:
            h.update(json.dumps([e.edit_id, e.delta.sha256(), [[k.question, k.subject] for k in e.scope]]).encode())
        return h.hexdigest()


def scope_of(prompt: str, rephrasings: Sequence[str] = (), subject: str = "") -> tuple[Key, ...]:
    """The keys of one edit record: its prompt and the rephrasings its caller gave, with its subject."""
    return tuple(Key(q, subject) for q in dict.fromkeys([prompt, *rephrasings]))
