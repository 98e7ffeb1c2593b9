"""`lifelong.measure_sample`: a large N measured on some of its edits, each answered as the whole state answers it."""

import pytest

from editor_core import lifelong as ll
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
    for part, stratum in zip(res["strata"], ll.strata(20, 3)):
        whole = ll.measure(model, tok, holding, probes, 20, {}, only=stratum)
        for fmt in ("plain", "chat"):
            assert part[fmt] == pytest.approx(whole[fmt], nan_ok=True), fmt
        assert part["teacher_forced"] == pytest.approx(whole["teacher_forced"])
    full = ll.measure(model, tok, holding, probes, 20, {})
    for fmt in ("plain", "chat"):  # Locality by generation is measured on every edit's unrelated prompt
        assert res[fmt]["locality"] == pytest.approx(full[fmt]["locality"])
