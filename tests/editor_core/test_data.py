"""Data loaders and splits over the shared data files (../shared/data)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from editor_core.data import (
    DATA_DIR_ENV,
    DATASETS,
    SPLITS,
    TASKS,
    default_data_dir,
    fact_keys,
    load_dataset,
    load_extra,
    load_file,
    load_task_split,
    normalize,
    task_splits,
)
from editor_core.data.common import first_string
from editor_core.records import EditRecord, Probe

DATA = default_data_dir()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"no shared data at {DATA}")

EXPECTED_TASK = {
    "zsre_mend_train_1k": "zsre",
    "zsre_mend_eval_portability": "zsre",
    "counterfact_train": "counterfact",
    "counterfact_val": "counterfact",
    "counterfact_edit": "counterfact",
    "knowedit_zsre_test_all": "zsre",
    "knowedit_counterfact_train_cf": "counterfact",
    "knowedit_recent_train": "wikirecent",
    "convsent_val": "convsent",
    "convsent_test": "convsent",
}


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[EditRecord]]:
    return {name: load_dataset(name) for name in DATASETS}


@pytest.fixture(scope="module")
def splits() -> dict[str, dict[str, list[EditRecord]]]:
    return {task: task_splits(task) for task in TASKS}


def check_record(r: EditRecord) -> None:
    assert isinstance(r, EditRecord)
    for text in (r.task, r.prompt, r.target_new, r.subject, r.source):
        assert isinstance(text, str)
    assert r.prompt.strip() and r.prompt == r.prompt.strip()
    assert r.target_new.strip() and r.target_new == r.target_new.strip()
    assert r.ground_truth is None or (isinstance(r.ground_truth, str) and r.ground_truth.strip())
    assert isinstance(r.rephrase_prompts, tuple)
    assert all(isinstance(p, str) and p.strip() for p in r.rephrase_prompts)
    for group in (r.locality, r.portability):
        assert isinstance(group, tuple)
        for p in group:
            assert isinstance(p, Probe)
            assert isinstance(p.prompt, str) and p.prompt.strip()
            assert isinstance(p.answer, str) and p.answer.strip()
    assert isinstance(r.extra, dict)


def test_every_shared_file_is_registered():
    on_disk = {p.relative_to(DATA).as_posix() for p in DATA.glob("*/*.json")}
    assert len(on_disk) == 10
    assert on_disk == {spec.relpath for spec in DATASETS.values()}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_file_loads(loaded, name):
    records = loaded[name]
    spec = DATASETS[name]
    raw = json.loads((DATA / spec.relpath).read_text(encoding="utf-8"))
    assert len(records) > 0
    assert len(records) >= len(raw) - 2  # only zsre train-1k drops records (2 with an empty alt)
    assert all(r.task == EXPECTED_TASK[name] for r in records)
    file_name = Path(spec.relpath).name
    assert all(r.source.startswith(file_name + ":") for r in records)
    assert len({r.source for r in records}) == len(records)
    for r in records:
        check_record(r)


def test_load_file_detects_format(loaded):
    for name, spec in DATASETS.items():
        if name in ("counterfact_edit", "zsre_mend_eval_portability", "knowedit_recent_train", "convsent_test"):
            records = load_file(DATA / spec.relpath)  # no task given: detected
            assert records == loaded[name]


def test_zsre_mend_fields(loaded):
    r = loaded["zsre_mend_eval_portability"][0]
    assert r.prompt == "When was the inception of IAAF Combined Events Challenge?"
    assert r.target_new == "2006" and r.ground_truth == "1998"
    assert r.subject == "IAAF Combined Events Challenge"
    assert r.rephrase_prompts == ("When was the IAAF Combined Events Challenge launched?",)
    assert r.locality == (Probe("nq question: what is the name of the last episode of spongebob", "The String"),)
    assert r.portability[0].answer == "Athletics"
    assert all(r.locality[0].prompt.startswith("nq question: ") for r in loaded["zsre_mend_train_1k"])
    assert all(r.portability == () for r in loaded["zsre_mend_train_1k"])
    assert all(len(r.portability) == 1 for r in loaded["zsre_mend_eval_portability"])


def test_counterfact_fields(loaded):
    r = loaded["counterfact_edit"][0]
    assert (r.prompt, r.target_new, r.subject, r.ground_truth) == (
        "The mother tongue of Danielle Darrieux is", "English", "Danielle Darrieux", "French")
    assert r.rephrase_prompts == ("Where Danielle Darrieux is from, people speak the language of",)
    assert r.locality == (Probe("Michel Rocard is a native speaker of", "French"),)
    assert r.extra["case_id"] == 0


def test_knowedit_fields(loaded):
    z = loaded["knowedit_zsre_test_all"][0]
    assert z.ground_truth == "Aspidoceratidae" and z.rephrase_prompts == ("What family are Epaspidoceras?",)
    assert z.locality[0] == Probe("The taxon rank of Epaspidoceras is", "genus")
    assert len(z.extra["locality_kinds"]) == len(z.locality)
    cf = loaded["knowedit_counterfact_train_cf"][0]
    assert cf.rephrase_prompts == () and cf.ground_truth == "France" and len(cf.portability) == 2
    rec = loaded["knowedit_recent_train"][0]
    assert rec.ground_truth is None and rec.portability == ()
    assert rec.locality[1] == Probe("The name of the country of citizenship of Ingrīda Amantova is", "Soviet Union")


def test_first_string_normalisation():
    assert first_string(" a ") == "a"
    assert first_string(["x", "y"]) == "x"
    assert first_string([["Soviet Union", "USSR"], ["Russia"]]) == "Soviet Union"
    assert first_string([[], ["Honorary Doctor"]]) == "Honorary Doctor"
    assert first_string([[], []]) is None and first_string("") is None and first_string(None) is None


def test_convsent_records(loaded):
    records = loaded["convsent_test"]
    assert len(records) == 800
    for i, r in enumerate(records[:50]):
        assert r.extra["sentiment"] == ("positive" if i % 2 == 0 else "negative")
        assert r.subject and r.prompt == f"What do you think of {r.subject}?"
        assert 2 <= len(r.rephrase_prompts) <= 3 and r.prompt not in r.rephrase_prompts
        assert all(r.subject in p for p in r.rephrase_prompts)
        assert r.target_new in r.extra["responses"]
        assert len(r.locality) == 1 and r.subject not in r.locality[0].prompt
        assert r.locality[0].prompt == records[i + 1].prompt
        assert r.portability == ()


def test_missing_file_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=DATA_DIR_ENV):
        load_dataset("counterfact_val", data_dir=tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "counterfact_mend" / "counterfact-"))):
        load_task_split("counterfact", "val")


def test_data_dir_parameter(tmp_path):
    (tmp_path / "zsre_mend").mkdir()
    rows = [{"subject": "S", "src": f"Q{i}?", "alt": "A", "answers": ["B"], "rephrase": f"R{i}?",
             "loc": "nq question: x", "loc_ans": "y"} for i in range(3)]
    (tmp_path / "zsre_mend" / "zsre_mend_train-1k.json").write_text(json.dumps(rows))
    records = load_dataset("zsre_mend_train_1k", data_dir=tmp_path)
    assert [r.prompt for r in records] == ["Q0?", "Q1?", "Q2?"]
    assert records[0].source == "zsre_mend_train-1k.json:0"


def test_unknown_task_and_split():
    with pytest.raises(ValueError, match="known tasks"):
        load_task_split("nope", "train")
    with pytest.raises(ValueError, match="known splits"):
        load_task_split("zsre", "dev")


@pytest.mark.parametrize("task", TASKS)
def test_splits_nonempty_and_disjoint(splits, task):
    parts = splits[task]
    assert set(parts) == set(SPLITS)
    for split in SPLITS:
        assert parts[split], f"{task}/{split} is empty"
        assert all(r.task == task for r in parts[split])
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        pa, pb = parts[a], parts[b]
        assert not {(normalize(r.prompt), normalize(r.target_new)) for r in pa} & {
            (normalize(r.prompt), normalize(r.target_new)) for r in pb}
        assert not {normalize(r.prompt) for r in pa} & {normalize(r.prompt) for r in pb}
        assert not {r.source for r in pa} & {r.source for r in pb}
        if task in ("wikirecent", "convsent"):
            assert not {normalize(r.subject) for r in pa} & {normalize(r.subject) for r in pb}
    # every fact key at most once over all splits
    keys = [k for split in SPLITS for r in parts[split] for k in fact_keys(r)]
    assert len(keys) == len(set(keys))


def test_split_definitions(splits):
    z = splits["zsre"]
    assert {r.source.split(":")[0] for r in z["test"]} == {"zsre_mend_eval_portability_gpt4.json"}
    assert max(int(r.source.split(":")[1]) for r in z["train"]) < 900
    assert min(int(r.source.split(":")[1]) for r in z["val"]) >= 900
    cf = splits["counterfact"]
    assert {r.source.split(":")[0] for r in cf["test"]} == {"counterfact-edit.json"}
    assert {r.source.split(":")[0] for r in cf["val"]} == {"counterfact-val.json"}
    assert {r.source.split(":")[0] for r in cf["train"]} == {"counterfact-train.json"}
    assert 1500 < len(cf["test"]) < 2500
    w = splits["wikirecent"]
    n = sum(len(w[s]) for s in SPLITS)
    assert n == 570 and 0.6 < len(w["train"]) / n < 0.8
    cs = splits["convsent"]
    assert {r.source.split(":")[0] for r in cs["test"]} == {"benchmark_Convsent_blender_test.json"}
    assert {r.source.split(":")[0] for r in cs["train"] + cs["val"]} == {"benchmark_Convsent_blender_val.json"}
    assert 0.75 < len(cs["train"]) / (len(cs["train"]) + len(cs["val"])) < 0.95
    # convsent locality probes stay inside their split
    for split in SPLITS:
        prompts = {r.prompt for r in cs[split]}
        assert all(r.locality[0].prompt in prompts for r in cs[split])


@pytest.mark.parametrize("task", TASKS)
def test_splits_deterministic(splits, task):
    again = {s: load_task_split(task, s) for s in SPLITS}
    for s in SPLITS:
        assert again[s] == splits[task][s]
        assert [r.extra for r in again[s]] == [r.extra for r in splits[task][s]]


def test_extra_sets(splits):
    zx = load_extra("zsre")
    assert zx and all(r.task == "zsre" for r in zx)
    train_val = {normalize(r.prompt) for s in ("train", "val") for r in splits["zsre"][s]}
    assert not {normalize(r.prompt) for r in zx} & train_val
    cx = load_extra("counterfact")
    assert cx and all(r.task == "counterfact" for r in cx)
    all_cf = {normalize(r.prompt) for s in SPLITS for r in splits["counterfact"][s]}
    assert not {normalize(r.prompt) for r in cx} & all_cf
    with pytest.raises(ValueError):
        load_extra("convsent")


def test_records_are_frozen(loaded):
    r = loaded["counterfact_val"][0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.prompt = "x"  # type: ignore[misc]


def test_other_relations_ask_about_the_same_subject():
    from editor_core.lifelong import lifelong_records, other_relations

    records = lifelong_records("test", 100)
    other = other_relations(records)
    assert len(other) >= 20  # KnowEdit's Relation_Specificity probes of the ZsRE hold-out records
    for r in records:
        if r.prompt in other:
            assert r.task == "zsre" and r.subject.lower() in other[r.prompt].lower() and other[r.prompt] != r.prompt


def test_relval_records_carry_their_own_relation_question_and_another_subjects_as_unrelated():
    from editor_core.data.splits import task_splits
    from editor_core.lifelong import lifelong_records, other_relations

    records = lifelong_records("relval", 20)
    other = other_relations(records)
    assert len(records) == 20 and set(other) == {r.prompt for r in records}
    subjects = [r.subject.lower() for r in records]
    assert len(set(subjects)) == 20
    for r, s in zip(records, subjects):
        assert s in other[r.prompt].lower() and other[r.prompt] != r.prompt
        (unrelated,) = r.locality  # about a subject that is never edited
        assert not any(e in unrelated.prompt.lower() for e in subjects)
    # too few records for unrelated prompts beyond the edited ones
    every = lifelong_records("relval", 10_000, strict=False)
    assert all(not any(r.subject.lower() in p.prompt.lower() for r in every for p in x.locality) for x in every[:5])
    with pytest.raises(ValueError):
        lifelong_records("relval", 10_000)
    # never a record the editor or the reported splits use
    used = {normalize(x.prompt) for split in task_splits("counterfact").values() for x in split}
    assert not used & {normalize(r.prompt) for r in records}
