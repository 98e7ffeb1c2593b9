"""`lifelong.measure_sample`: a large N measured on some of its edits, each answered as the whole state answers it."""

import dataclasses

import pytest

from editor_core import lifelong as ll
from editor_core.chat import chat_prompt
from editor_core.delta import base_weights
from editor_core.models import ModelSpec
from editor_core.refit import RefitConfig

BRIEF = RefitConfig(steps=3, variants=0, keep=0, subject_questions=0)  # a refit that runs in a moment on the tiny model


@pytest.fixture(scope="module")
def setting(tiny_llama):
    model, tok = tiny_llama
    method = ll.Method("none/routed+refit", None, "routed", BRIEF)
    probes = ll.Probes(ll.lifelong_records("val", 20), ll.capability_questions(8), n_fluency=2)
    return model, tok, ModelSpec.for_model(model), method, probes


def test_strata_are_the_first_tenth_and_a_fixed_draw_of_the_rest():
    early, later = ll.strata(1000, 300)
    assert early == list(range(100))
    assert len(later) == len(set(later)) == 300 and all(100 <= i < 1000 for i in later)
    assert ll.strata(1000, 300) == (early, later) and ll.strata(1000, 300, seed=1)[1] != later
    assert set(later) < set(ll.strata(1000, 400)[1])  # a larger sample measures the same edits and more
    assert ll.strata(20, 50) == ([0, 1], list(range(2, 20)))  # more asked than there are: all of them


def test_a_subject_answer_is_kept_hijacked_or_names_the_target_only_against_the_unedited_one():
    questions = ["How tall is the Eiffel Tower?", "Who built the Eiffel Tower?", "Where is the Eiffel Tower?"]
    prompts = [f"<chat>{q}" for q in questions]
    unedited = {prompts[0]: "It is 330 metres tall.", prompts[1]: "Gustave Eiffel's company.", prompts[2]: "In Rome, Italy."}
    answers = ["The tower in Rome is 800 metres tall.", "Rome.", "In Rome, Italy."]
    kept, hijacked, named = ll._against_unedited((questions, prompts, ["Rome"] * 3), answers, unedited)
    assert kept == [0.0, 0.0, 1.0]
    assert hijacked == [0.0, 1.0, 0.0]  # the whole cut answer is the target
    assert named == [1.0, 1.0, 0.0]  # the target anywhere, where the unedited answer did not name it


def test_every_edit_sampled_scores_as_the_whole_state(setting, tmp_path):
    model, tok, spec, method, probes = setting
    whole = ll.run(model, tok, spec, method, probes, [20], cache=tmp_path)[0]
    sample = ll.measure_sample(model, tok, spec, method, probes, 20, 18, cache=tmp_path)
    assert sample["sample"] | {"norms_and_seconds": None} == {
        "first": 2,
        "rest": 18,
        "of_rest": 18,
        "seed": 0,
        "deltas_computed": 20,
        "norms_and_seconds": None,
    }
    # the strata's means weighted by the questions each stands for are the whole state's means
    for fmt in ("plain", "chat"):
        for name, value in whole[fmt].items():
            assert sample[fmt][name] == pytest.approx(value), (fmt, name)
    assert sample["teacher_forced"]["reliability"] == pytest.approx(whole["teacher_forced"]["reliability"])
    assert sample["fluency_ratio"] == pytest.approx(whole["fluency_ratio"])
    # the state's health is measured once, with the first stratum, not again with the second
    assert sample["strata"][1]["plain"]["capability"] is None and sample["strata"][0]["plain"]["capability"] is not None
    # every edit's own question and rephrasing with its answers, as the whole state gave them (bench/lifelong.py --answers)
    def by_question(res):
        return sorted((a["kind"], a["question"], a["plain"], a["chat"]) for a in res["answers"])

    assert by_question(sample) == by_question(whole)
    assert sum(a["kind"] == "rel" for a in whole["answers"]) == 20
    rephrasings = {r.rephrase_prompts[0] for r in probes.records[:20] if r.rephrase_prompts}
    assert {a["question"] for a in whole["answers"] if a["kind"] == "gen"} == rephrasings


def test_a_sample_computes_only_what_it_reads(setting, tmp_path):
    model, tok, spec, method, probes = setting
    need = ll.needed(method, tok, probes, 20, [0, 1, 7])
    assert {0, 1, 7} <= set(need) and len(need) < 20
    res = ll.measure_sample(model, tok, spec, method, probes, 20, 1, cache=tmp_path)
    assert res["sample"]["deltas_computed"] == len(ll.needed(method, tok, probes, 20, sum(ll.strata(20, 1), [])))
    assert len(list(tmp_path.glob("*.safetensors"))) == res["sample"]["deltas_computed"]


def test_a_question_that_reaches_an_edit_held_without_its_delta_is_an_error(setting):
    model, tok, spec, method, probes = setting
    holding = method.make_holding(base_weights(model, spec.edit_params))
    record = probes.records[0]
    holding.add("e0", record, ll._pending(method))
    with pytest.raises(RuntimeError, match="held without its delta"):
        with holding.rows(model, [record.prompt]):
            pass
    with holding.rows(model, ["What is the boiling point of water?"]):  # a question in no edit's scope runs on the base
        pass


def test_a_sampled_edit_answers_as_in_the_whole_state(setting, tmp_path):
    """The claim itself: with most edits held by their keys alone, the measured edits score as with every delta held."""
    model, tok, spec, method, probes = setting
    res = ll.measure_sample(model, tok, spec, method, probes, 20, 3, cache=tmp_path)
    assert res["sample"]["deltas_computed"] < 20
    holding = method.make_holding(base_weights(model, spec.edit_params))
    for i, record in enumerate(probes.records[:20]):
        ll.apply_edit(method, model, tok, spec, holding, f"e{i}", record, tmp_path)
    for part, stratum, health in zip(res["strata"], ll.strata(20, 3), (True, False)):  # the state's health: with the first
        whole = ll.measure(model, tok, holding, probes, 20, {}, only=stratum, health=health)
        for fmt in ("plain", "chat"):
            assert part[fmt] == pytest.approx(whole[fmt], nan_ok=True), fmt
        assert part["teacher_forced"] == pytest.approx(whole["teacher_forced"])
    full = ll.measure(model, tok, holding, probes, 20, {})
    for fmt in ("plain", "chat"):  # Locality by generation is measured on every edit's unrelated prompt
        assert res[fmt]["locality"] == pytest.approx(full[fmt]["locality"])
    # alone, with only the deltas the unrelated prompts reach computed: the same figure
    alone_cache = tmp_path / "alone"
    alone = ll.locality_over_all(model, tok, spec, method, probes, 20, cache=alone_cache)
    assert alone["reached"] == res["locality_reached"]
    assert len(list(alone_cache.glob("*.safetensors"))) <= alone["reached"] < 20
    for fmt in ("plain", "chat"):
        assert alone[fmt] == pytest.approx(full[fmt]["locality"])


def test_locality_over_all_generates_only_the_prompts_that_reach_an_edit(setting, tmp_path, monkeypatch):
    """An unrelated prompt that names an edited subject (here: another edit's own question) is answered on
    that edit's delta and compared; the others run on the base weights and are unchanged by construction."""
    model, tok, spec, method, probes = setting
    records = list(probes.records[:20])
    moved = dataclasses.replace(records[3].locality[0], prompt=records[5].prompt)
    records[3] = dataclasses.replace(records[3], locality=(moved, *records[3].locality[1:]))
    probes = ll.Probes(records, probes.capability, n_fluency=2)
    generated = []
    answer = ll.answer

    def recorded(model, tok, holding, questions, prompts, *args):
        generated.extend(prompts)
        return answer(model, tok, holding, questions, prompts, *args)

    monkeypatch.setattr(ll, "answer", recorded)
    alone = ll.locality_over_all(model, tok, spec, method, probes, 20, cache=tmp_path)
    monkeypatch.undo()
    assert alone["reached"] == 1 and len(list(tmp_path.glob("*.safetensors"))) == 1  # edit 5's delta alone
    assert generated == [records[5].prompt, chat_prompt(tok, records[5].prompt)]  # the one prompt that reaches it, each format
    holding = method.make_holding(base_weights(model, spec.edit_params))
    for i, record in enumerate(records):
        ll.apply_edit(method, model, tok, spec, holding, f"e{i}", record, tmp_path)
    full = ll.measure(model, tok, holding, probes, 20, {}, teacher_forcing=False)
    for fmt in ("plain", "chat"):
        assert alone[fmt] == pytest.approx(full[fmt]["locality"])
        assert alone[fmt] == pytest.approx(100.0 * (20 - len(alone["changed"][fmt])) / 20)
