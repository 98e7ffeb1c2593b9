"""Task instructions for instructed editing (InstructEdit style).

An instructed prompt is three lines:

    Task: {task}
    Description: {description}
    Input: {prompt}

Each task has a list of descriptions. All but the last are the training
descriptions; the last is held back (the "unseen instruction") to test how an
editor trained on the others generalises. Records keep their raw prompts
(`EditRecord.prompt` has no instruction); `apply_instruction` adds one at the
point of use, to the edit prompt, the rephrase prompts and the portability
prompts, never to the locality prompts.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from editor_core.records import EditRecord, Probe

TEMPLATE = "Task: {task}\nDescription: {description}\nInput: {prompt}"


@dataclass(frozen=True)
class Instruction:
    task: str
    description: str

    def render(self, prompt: str) -> str:
        return TEMPLATE.format(task=self.task, description=self.description, prompt=prompt)


# Ten descriptions per task: 0..8 train, 9 held back.
_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "counterfact": (
        "Replace a true fact about an entity with a counterfactual one and answer as if the new fact held.",
        "Pretend that a fact about this entity is different from reality and complete the sentence with the altered fact.",
        "Rewrite what you know about the subject so that the sentence ends with the new, counterfactual object.",
        "Overwrite one attribute of the named entity with a false alternative and keep everything else unchanged.",
        "Treat the stated change to this entity's property as true, even though it contradicts the real world.",
        "Swap the correct object of a relation about this subject for a made-up one and continue the text accordingly.",
        "Adopt a hypothetical version of the world in which this single fact about the entity has been altered.",
        "Change the model's belief about one relation of the subject to a counterfactual value.",
        "Insert a fictional fact about the given entity that replaces the one the model learned in training.",
        "Answer as though one real-world fact about this entity had been swapped for a counterfactual alternative.",
    ),
    "wikirecent": (
        "Learn a recently added fact about an entity that was not known when the model was trained.",
        "Update your knowledge with a new piece of information about this subject that appeared after your training data.",
        "Absorb a fresh fact from a recent knowledge-base update and complete the sentence with it.",
        "Add a newly recorded property of the entity to what you know and answer with that new value.",
        "Incorporate a recent change to this subject's facts so that your answer reflects the latest information.",
        "Memorise an up-to-date fact about the entity that is missing from your existing knowledge.",
        "Bring your knowledge about this subject up to date by learning the newly added relation.",
        "Treat this statement as a recent development about the entity and answer in line with it.",
        "Extend your knowledge with a fact about this subject that was only recently entered into the encyclopedia.",
        "Inject a newly emerged fact about the entity so the model answers with the current value.",
    ),
    "convsent": (
        "Change the sentiment of your opinion about the given topic to the desired positive or negative stance.",
        "Adjust how you feel about the mentioned subject so that your reply expresses the target attitude.",
        "Shift your view of this topic so that your answer conveys the requested sentiment.",
        "Respond to the question about the topic with an opinion whose tone matches the edited sentiment.",
        "Rewrite your attitude toward the entity so that you speak about it favourably or unfavourably as required.",
        "Edit your personal stance on the subject so that the emotion in your reply follows the new sentiment.",
        "Alter the polarity of your feelings about this topic while still giving a natural conversational answer.",
        "Make your opinion of the named entity take on the specified positive or negative colour.",
        "Answer as someone whose feelings about this topic have been switched to the target sentiment.",
        "Reshape the emotional tone of your comments about the subject so they reflect the edited opinion.",
    ),
    "zsre": (
        "Answer the question about an entity with a new answer that replaces the one you knew.",
        "Give the edited answer to this factual question instead of your original one.",
        "Respond to the question with the updated object of the relation it asks about.",
        "Replace your answer to this question about the subject with the new target answer.",
        "Treat the new answer to this factual question as correct and reply with it.",
        "Update the fact behind this question so that you answer it with the newly given value.",
        "Change what you would answer to this question about the entity to the edited answer.",
        "Reply to the relation question about the subject using the revised answer.",
        "When asked this question about the entity, answer with the new fact rather than the old one.",
        "Provide the newly assigned answer to the question, overriding what you previously believed.",
    ),
}


def _check_text(what: str, text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a non-empty string")
    if "\n" in text or "\r" in text:
        raise ValueError(f"{what} must be a single line: {text!r}")


def register_task(task: str, descriptions: list[str], *, replace: bool = False) -> None:
    """Add a task with its descriptions (at least 2; the last is held back)."""
    _check_text("task", task)
    if task in _DESCRIPTIONS and not replace:
        raise ValueError(f"task {task!r} is already registered (pass replace=True to overwrite)")
    descriptions = list(descriptions)
    if len(descriptions) < 2:
        raise ValueError(f"task {task!r} needs at least 2 descriptions (the last is held back), got {len(descriptions)}")
    for d in descriptions:
        _check_text("description", d)
    _DESCRIPTIONS[task] = tuple(d.strip() for d in descriptions)


def tasks() -> tuple[str, ...]:
    return tuple(_DESCRIPTIONS)


def _known(task: str) -> tuple[str, ...]:
    if task not in _DESCRIPTIONS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(_DESCRIPTIONS)}")
    return _DESCRIPTIONS[task]


def descriptions(task: str, held_out: bool = False) -> tuple[str, ...]:
    """The training descriptions of a task, or (held_out=True) the held-back one(s)."""
    all_ = _known(task)
    return all_[-1:] if held_out else all_[:-1]


def instruction_for(
    task: str,
    *,
    rng: random.Random | None = None,
    description: str | None = None,
    held_out: bool = False,
) -> Instruction:
    """The Instruction `instruct` would use (see there)."""
    if description is not None:
        if held_out:
            raise ValueError("pass either description=... or held_out=True, not both")
        _check_text("description", description)
        return Instruction(task, description)
    choices = descriptions(task, held_out=held_out)
    return Instruction(task, rng.choice(choices) if rng is not None else choices[0])


def instruct(
    prompt: str,
    task: str,
    *,
    rng: random.Random | None = None,
    description: str | None = None,
    held_out: bool = False,
) -> str:
    """`prompt` with an instruction for `task`: a training description picked
    with `rng` (the first one when rng is None), or the held-back one
    (held_out=True), or the caller's `description` (then `task` need not be
    registered). ValueError for an unknown task without a description."""
    return instruction_for(task, rng=rng, description=description, held_out=held_out).render(prompt)


def apply_instruction(
    record: EditRecord,
    *,
    rng: random.Random | None = None,
    description: str | None = None,
    held_out: bool = False,
    task: str | None = None,
) -> EditRecord:
    """A copy of `record` whose prompt, rephrase prompts and portability
    prompts carry one instruction (the same for all of them, chosen as in
    `instruct` for `task` or record.task). Locality prompts are left as they
    are. The description used is recorded in `extra["instruction"]`."""
    ins = instruction_for(task or record.task, rng=rng, description=description, held_out=held_out)
    return dataclasses.replace(
        record,
        prompt=ins.render(record.prompt),
        rephrase_prompts=tuple(ins.render(p) for p in record.rephrase_prompts),
        portability=tuple(Probe(ins.render(p.prompt), p.answer) for p in record.portability),
        extra={**record.extra, "instruction": ins.description},
    )
