"""Readers for the shared knowledge-editing data (../shared/data) into EditRecords.

- `load_file(path)` reads any one file (format detected from its content).
- `DATASETS` names every shared file; `load_dataset(name)` reads one.
- `load_task_split(task, split)` gives the deterministic, disjoint splits
  documented in `editor_core.data.splits`; `load_extra(task)` the extra sets.

The data directory is a parameter everywhere; by default it is
`default_data_dir()`: $INSTRUCTEDIT_DATA_DIR, else ../shared/data next to the repo.
"""

from editor_core.data.common import DATA_DIR_ENV, default_data_dir, normalize, stable_bucket
from editor_core.data.files import DATASETS, DatasetFile, detect_format, load_dataset, load_file
from editor_core.data.splits import SPLITS, TASKS, fact_keys, load_extra, load_task_split, task_splits

__all__ = [
    "DATA_DIR_ENV",
    "DATASETS",
    "DatasetFile",
    "SPLITS",
    "TASKS",
    "default_data_dir",
    "detect_format",
    "fact_keys",
    "load_dataset",
    "load_extra",
    "load_file",
    "load_task_split",
    "normalize",
    "stable_bucket",
    "task_splits",
]
