"""The one record type every data set is read into, and every editor consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Probe:
    """A (prompt, answer) pair used to test an edit: locality or portability."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class EditRecord:
    """One edit request and the prompts that measure how well it took.

    `prompt` is the raw edit prompt, without any instruction; instructions are
    added by `editor_core.instructions` at the point of use, so the same record
    serves instructed and plain editors.
    """

    task: str
    prompt: str
    target_new: str
    subject: str = ""
    ground_truth: str | None = None
    rephrase_prompts: tuple[str, ...] = ()
    locality: tuple[Probe, ...] = ()
    portability: tuple[Probe, ...] = ()
    # Where the record came from (file name and index), for tracing and de-duplication.
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)
