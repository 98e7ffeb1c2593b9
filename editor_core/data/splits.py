"""Deterministic, disjoint train/val/test splits per task.

Which file (and part) makes each split. Record counts from ../shared/data
(train / val / test): zsre 898 / 100 / 537; counterfact 9869 / 1906 / 2005;
wikirecent 408 / 76 / 86; convsent 677 / 121 / 800. Extra sets: zsre 1286,
counterfact 1417.

zsre
    train  zsre_mend/zsre_mend_train-1k.json, records 0..899 of the file
    val    zsre_mend/zsre_mend_train-1k.json, records 900..999
    test   zsre_mend/zsre_mend_eval_portability_gpt4.json (InstructEdit hold-out test)
    Two train records have an empty `alt` and are skipped.
    Extra (`load_extra("zsre")`, evaluation only): knowedit ZsRE-test-all, minus
    anything in zsre train/val. It shares many facts with zsre test (both come
    from MEND's zsRE eval set): use it as an alternative eval set, not with test.
counterfact
    train  counterfact_mend/counterfact-train.json
    val    counterfact_mend/counterfact-val.json
    test   counterfact_mend/counterfact-edit.json, the records whose normalised
           prompt hashes (sha256) into buckets 0..19 of 100 (about 20%)
    Extra (`load_extra("counterfact")`, training only): knowedit
    wiki_counterfact train_cf (a different fact base, KnowEdit format), minus
    anything whose key is in a counterfact split. It is not added to train
    by default, and lifelong editing validates on it ("relval",
    `editor_core.lifelong.lifelong_records`).
wikirecent
    knowedit/benchmark_wiki_recent_recent_train.json (the only wiki_recent file
    here), split by sha256 of the normalised subject: buckets 0..69 train,
    70..84 val, 85..99 test, so a subject never lands in two splits.
convsent
    train  knowedit/benchmark_Convsent_blender_val.json, entities whose sha256
           bucket is 0..84
    val    the same file, buckets 85..99
    test   knowedit/benchmark_Convsent_blender_test.json
    (see `editor_core.data.convsent` for how an edit is built from a record;
    a split's locality probes only name entities of that split)

De-duplication. Each record has fact keys: its normalised prompt (case and
whitespace folded, trailing ?.! dropped; this implies normalised prompt +
target_new), plus, for wikirecent and convsent, its normalised subject. The
splits are built in the order test, val, train; a record is dropped when one
of its keys already appears in an earlier split or earlier in its own split.
So every key occurs at most once over a task's three splits: precedence is
test > val > train, and within a split the first record in file order wins.
(CounterFact: 34 train prompts also occur in val and 108 in edit, plus some
repeated prompts within a file, the same prompt with another target.)
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from editor_core.data.common import normalize, read_json, stable_bucket
from editor_core.data.convsent import convsent_records
from editor_core.data.files import DATASETS, load_dataset
from editor_core.records import EditRecord

TASKS = ("zsre", "counterfact", "wikirecent", "convsent")
SPLITS = ("train", "val", "test")

ZSRE_TRAIN_COUNT = 900
COUNTERFACT_TEST_BUCKETS = 20  # of 100, from counterfact-edit
WIKIRECENT_TRAIN_BUCKETS, WIKIRECENT_VAL_BUCKETS = 70, 15  # of 100; the rest is test
CONVSENT_TRAIN_BUCKETS = 85  # of 100, of blender_val; the rest is val

_SUBJECT_KEYED = ("wikirecent", "convsent")

# task -> (DATASETS name, the splits it must not share a key with)
EXTRA = {
    "zsre": ("knowedit_zsre_test_all", ("train", "val")),  # evaluation only
    "counterfact": ("knowedit_counterfact_train_cf", ("train", "val", "test")),  # training (off by default), "relval"
}


def fact_keys(record: EditRecord) -> set[tuple[str, str]]:
    """The keys under which no two records of a task's splits may coincide."""
    keys = {("prompt", normalize(record.prompt))}
    if record.task in _SUBJECT_KEYED and record.subject:
        keys.add(("subject", normalize(record.subject)))
    return keys


def _file_index(record: EditRecord) -> int:
    return int(record.source.rsplit(":", 1)[1])


def _dedupe(ordered: Iterable[tuple[str, list[EditRecord]]], seen: set | None = None) -> dict[str, list[EditRecord]]:
    """Drop records with a key seen in an earlier split (or earlier in the same one)."""
    seen = set() if seen is None else seen
    out: dict[str, list[EditRecord]] = {}
    for split, records in ordered:
        kept = []
        for r in records:
            keys = fact_keys(r)
            if keys & seen:
                continue
            seen |= keys
            kept.append(r)
        out[split] = kept
    return out


def _zsre(data_dir) -> dict[str, list[EditRecord]]:
    train_file = load_dataset("zsre_mend_train_1k", data_dir)
    return {
        "test": load_dataset("zsre_mend_eval_portability", data_dir),
        "val": [r for r in train_file if _file_index(r) >= ZSRE_TRAIN_COUNT],
        "train": [r for r in train_file if _file_index(r) < ZSRE_TRAIN_COUNT],
    }


def _counterfact(data_dir) -> dict[str, list[EditRecord]]:
    edit = load_dataset("counterfact_edit", data_dir)
    return {
        "test": [r for r in edit if stable_bucket(normalize(r.prompt)) < COUNTERFACT_TEST_BUCKETS],
        "val": load_dataset("counterfact_val", data_dir),
        "train": load_dataset("counterfact_train", data_dir),
    }


def _wikirecent(data_dir) -> dict[str, list[EditRecord]]:
    records = load_dataset("knowedit_recent_train", data_dir)
    train_end = WIKIRECENT_TRAIN_BUCKETS
    val_end = train_end + WIKIRECENT_VAL_BUCKETS

    def split_of(r: EditRecord) -> str:
        b = stable_bucket(normalize(r.subject or r.prompt))
        return "train" if b < train_end else "val" if b < val_end else "test"

    return {s: [r for r in records if split_of(r) == s] for s in ("test", "val", "train")}


def _convsent(data_dir) -> dict[str, list[EditRecord]]:
    val_path = DATASETS["convsent_val"].path(data_dir)
    test_path = DATASETS["convsent_test"].path(data_dir)
    raw = read_json(val_path)
    in_train = [stable_bucket(normalize(str(x.get("ent", "")))) < CONVSENT_TRAIN_BUCKETS for x in raw]
    return {
        "test": convsent_records(read_json(test_path), test_path.name),
        "val": convsent_records(raw, val_path.name, [i for i, t in enumerate(in_train) if not t]),
        "train": convsent_records(raw, val_path.name, [i for i, t in enumerate(in_train) if t]),
    }


_BUILDERS: dict[str, Callable[..., dict[str, list[EditRecord]]]] = {
    "zsre": _zsre,
    "counterfact": _counterfact,
    "wikirecent": _wikirecent,
    "convsent": _convsent,
}


def task_splits(task: str, data_dir: str | os.PathLike | None = None) -> dict[str, list[EditRecord]]:
    """All three splits of a task: {"train": [...], "val": [...], "test": [...]}."""
    if task not in _BUILDERS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    raw = _BUILDERS[task](data_dir)
    deduped = _dedupe((s, raw[s]) for s in ("test", "val", "train"))
    return {s: deduped[s] for s in SPLITS}


def load_task_split(task: str, split: str, data_dir: str | os.PathLike | None = None) -> list[EditRecord]:
    """One split ("train" | "val" | "test") of a task, as documented above."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    return task_splits(task, data_dir)[split]


def load_extra(task: str, data_dir: str | os.PathLike | None = None) -> list[EditRecord]:
    """The extra set of a task (see above), minus every record sharing a key
    with the splits it must stay apart from (zsre: train and val; counterfact:
    all three) or with an earlier record of the extra set."""
    if task not in EXTRA:
        raise ValueError(f"no extra set for task {task!r}; tasks with one: {', '.join(EXTRA)}")
    name, exclude = EXTRA[task]
    splits = task_splits(task, data_dir)
    seen: set = set()
    for split in exclude:
        for r in splits[split]:
            seen |= fact_keys(r)
    return _dedupe([("extra", load_dataset(name, data_dir))], seen)["extra"]
