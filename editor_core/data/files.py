"""The shared data files, and `load_file`, which reads any of them into EditRecords."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from editor_core.data.common import data_file, read_json
from editor_core.data.convsent import is_convsent, load_convsent
from editor_core.data.counterfact import is_counterfact_mend, load_counterfact_mend
from editor_core.data.knowedit import is_knowedit, load_knowedit
from editor_core.data.zsre import is_zsre_mend, load_zsre_mend
from editor_core.records import EditRecord


@dataclass(frozen=True)
class DatasetFile:
    """One file of the data directory: its path relative to it, format and task."""

    relpath: str
    format: str  # "zsre_mend" | "counterfact_mend" | "knowedit" | "convsent"
    task: str

    def path(self, data_dir: str | os.PathLike | None = None) -> Path:
        return data_file(self.relpath, data_dir)


DATASETS: dict[str, DatasetFile] = {
    "zsre_mend_train_1k": DatasetFile("zsre_mend/zsre_mend_train-1k.json", "zsre_mend", "zsre"),
    "zsre_mend_eval_portability": DatasetFile(
        "zsre_mend/zsre_mend_eval_portability_gpt4.json", "zsre_mend", "zsre"
    ),
    "counterfact_train": DatasetFile("counterfact_mend/counterfact-train.json", "counterfact_mend", "counterfact"),
    "counterfact_val": DatasetFile("counterfact_mend/counterfact-val.json", "counterfact_mend", "counterfact"),
    "counterfact_edit": DatasetFile("counterfact_mend/counterfact-edit.json", "counterfact_mend", "counterfact"),
    "knowedit_zsre_test_all": DatasetFile("knowedit/benchmark_ZsRE_ZsRE-test-all.json", "knowedit", "zsre"),
    "knowedit_counterfact_train_cf": DatasetFile(
        "knowedit/benchmark_wiki_counterfact_train_cf.json", "knowedit", "counterfact"
    ),
    "knowedit_recent_train": DatasetFile("knowedit/benchmark_wiki_recent_recent_train.json", "knowedit", "wikirecent"),
    "convsent_val": DatasetFile("knowedit/benchmark_Convsent_blender_val.json", "convsent", "convsent"),
    "convsent_test": DatasetFile("knowedit/benchmark_Convsent_blender_test.json", "convsent", "convsent"),
}


def detect_format(raw: list[dict], file_name: str = "") -> str:
    """The format of a file's records, from the fields of its first record."""
    if not raw:
        return "empty"
    sample = raw[0]
    for name, test in (
        ("convsent", is_convsent),
        ("zsre_mend", is_zsre_mend),
        ("counterfact_mend", is_counterfact_mend),
        ("knowedit", is_knowedit),
    ):
        if test(sample):
            return name
    keys = sorted(sample) if isinstance(sample, dict) else type(sample).__name__
    raise ValueError(f"{file_name or 'data'}: unknown record format (fields {keys})")


def load_file(path: str | os.PathLike, task: str | None = None) -> list[EditRecord]:
    """Every usable record of one data file, in file order; the format is
    detected from the content and, for KnowEdit, the task from the file name
    (or `task`, which also overrides the task of the other formats)."""
    path = Path(path)
    raw = read_json(path)
    fmt = detect_format(raw, path.name)
    if fmt == "empty":
        return []
    if fmt == "knowedit":
        return load_knowedit(path, task=task, raw=raw)
    loader = {"convsent": load_convsent, "zsre_mend": load_zsre_mend, "counterfact_mend": load_counterfact_mend}[fmt]
    records = loader(path, raw=raw)
    if task is not None:
        records = [dataclasses.replace(r, task=task) for r in records]
    return records


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> list[EditRecord]:
    """`load_file` of the DATASETS entry `name`."""
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    return load_file(spec.path(data_dir), task=spec.task)
