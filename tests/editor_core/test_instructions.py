"""Instruction formatting and application."""

from __future__ import annotations

import random

import pytest

from editor_core import instructions as ins
from editor_core.instructions import (
    Instruction,
    apply_instruction,
    descriptions,
    instruct,
    register_task,
    tasks,
)
from editor_core.records import EditRecord, Probe

TASKS = ("counterfact", "wikirecent", "convsent", "zsre")


def make_record(task: str = "counterfact") -> EditRecord:
    return EditRecord(
        task=task,
        prompt="The mother tongue of Danielle Darrieux is",
        target_new="English",
        subject="Danielle Darrieux",
        ground_truth="French",
        rephrase_prompts=("Where Danielle Darrieux is from, people speak", "Danielle Darrieux speaks"),
        locality=(Probe("Michel Rocard is a native speaker of", "French"),),
        portability=(Probe("The language of Danielle Darrieux's films is", "English"),),
        source="x.json:0",
        extra={"case_id": 0},
    )


def test_builtin_tasks_have_ten_distinct_one_line_descriptions():
    assert set(TASKS) <= set(tasks())
    for task in TASKS:
        train, held = descriptions(task), descriptions(task, held_out=True)
        assert len(train) == 9 and len(held) == 1
        all_ = train + held
        assert len(set(all_)) == 10
        assert all(d.strip() and "\n" not in d and d.endswith(".") for d in all_)
        assert held[0] not in train


def test_format_is_three_lines():
    text = instruct("Who wrote Hamlet?", "zsre")
    assert text == f"Task: zsre\nDescription: {descriptions('zsre')[0]}\nInput: Who wrote Hamlet?"
    assert Instruction("t", "d").render("p") == "Task: t\nDescription: d\nInput: p"
    assert instruct("p", "anything", description="custom") == "Task: anything\nDescription: custom\nInput: p"


def test_random_choice_never_returns_held_out():
    rng = random.Random(0)
    for task in TASKS:
        held = descriptions(task, held_out=True)[0]
        seen = set()
        for _ in range(300):
            desc = instruct("p", task, rng=rng).split("\n")[1].removeprefix("Description: ")
            assert desc != held and desc in descriptions(task)
            seen.add(desc)
        assert len(seen) == 9
        assert instruct("p", task, held_out=True) == Instruction(task, held).render("p")
        assert instruct("p", task, held_out=True, rng=rng) == Instruction(task, held).render("p")


def test_rng_is_deterministic():
    a = [instruct("p", "counterfact", rng=random.Random(7)) for _ in range(3)]
    b = [instruct("p", "counterfact", rng=random.Random(7)) for _ in range(3)]
    assert a == b


def test_apply_instruction_leaves_locality_untouched():
    rec = make_record()
    out = apply_instruction(rec, rng=random.Random(1))
    desc = out.extra["instruction"]
    assert desc in descriptions("counterfact")
    render = Instruction("counterfact", desc).render
    assert out.prompt == render(rec.prompt)
    assert out.rephrase_prompts == tuple(render(p) for p in rec.rephrase_prompts)
    assert out.portability == tuple(Probe(render(p.prompt), p.answer) for p in rec.portability)
    assert out.locality == rec.locality
    assert all("Task:" not in p.prompt for p in out.locality)
    assert (out.target_new, out.subject, out.ground_truth, out.source) == (
        rec.target_new, rec.subject, rec.ground_truth, rec.source)
    assert out.extra["case_id"] == 0
    # the original is unchanged
    assert rec.prompt == "The mother tongue of Danielle Darrieux is" and "instruction" not in rec.extra


def test_apply_instruction_held_out_and_custom():
    rec = make_record("zsre")
    held = apply_instruction(rec, held_out=True)
    assert held.prompt == Instruction("zsre", descriptions("zsre", held_out=True)[0]).render(rec.prompt)
    custom = apply_instruction(make_record("newtask"), description="Do the thing.")
    assert custom.prompt.startswith("Task: newtask\nDescription: Do the thing.\nInput: ")
    assert custom.locality == rec.locality


def test_register_task():
    name = "test_register_task_only"
    register_task(name, ["First way.", "Second way.", "Held back way."])
    try:
        assert name in tasks()
        assert descriptions(name) == ("First way.", "Second way.")
        assert descriptions(name, held_out=True) == ("Held back way.",)
        for _ in range(50):
            assert "Held back way." not in instruct("p", name, rng=random.Random(_))
        with pytest.raises(ValueError, match="already registered"):
            register_task(name, ["a", "b"])
        register_task(name, ["a", "b"], replace=True)
        assert descriptions(name) == ("a",)
    finally:
        ins._DESCRIPTIONS.pop(name, None)
    with pytest.raises(ValueError, match="at least 2"):
        register_task("too_few", ["only one"])
    with pytest.raises(ValueError, match="single line"):
        register_task("bad_line", ["a\nb", "c"])
    assert "too_few" not in tasks() and "bad_line" not in tasks()


def test_unknown_task_errors():
    with pytest.raises(ValueError, match="known tasks: .*counterfact"):
        instruct("p", "nope")
    with pytest.raises(ValueError, match="known tasks"):
        apply_instruction(make_record("nope"))
    with pytest.raises(ValueError, match="known tasks"):
        descriptions("nope")
    with pytest.raises(ValueError):
        instruct("p", "zsre", description="x", held_out=True)
