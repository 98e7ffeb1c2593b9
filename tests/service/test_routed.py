"""The routed memory in the service: edits that show, hold together, leave other answers alone, and roll back."""

import dataclasses

import pytest
import torch

from editor_core.refit import QUICK, RefitConfig
from editor_core.routing import MemoryEntry

from harness import Service, expected_sha, wait_until

PERU = {"prompt": "The capital of Peru is", "target_new": "Quito"}
HAMLET = {"prompt": "Hamlet was written by", "target_new": "Dickens"}
UNRELATED = "Water is made of hydrogen and"


@pytest.fixture
def service(settings, components):
    with Service(settings.model_copy(update={"refit": True, "quick_refit": True}), components) as svc:
        # the tiny random model: a firmer push, a margin its flat logits allow, and a lighter hold on
        # the subject's other questions, which it cannot keep and answer at once (at the shipped 4.0
        # whether the answer wins by step 100 turns on float rounding)
        svc.runtime.worker.refit = RefitConfig(lr=3e-2, steps=100, rank=8, min_prob=0.006, subject_weight=1.0)
        svc.runtime.worker.quick = dataclasses.replace(QUICK, min_prob=0.006)
        yield svc


def ask(svc, prompt: str, version: int | None = None) -> str:
    body = {"prompt": prompt, "max_new_tokens": 12, **({"version": version} if version is not None else {})}
    r = svc.client.post("/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()["text"].strip()


def settled(svc, edit_id: str) -> dict:
    """The edit once its background check (and refit) is over."""
    wait_until(
        lambda: (
            svc.client.get(f"/edits/{edit_id}").json()["refit"] != "pending"
            and svc.client.get(f"/edits/{edit_id}").json()["took"] is not None
        ),
        what="the check and refit",
    )
    return svc.client.get(f"/edits/{edit_id}").json()


def test_edits_show_hold_together_and_roll_back_exactly(service, components):
    base_unrelated, base_peru = ask(service, UNRELATED), ask(service, PERU["prompt"])
    a = service.post_edit(PERU)
    assert service.wait(a)["version"] == 1
    edit = settled(service, a)
    assert edit["took"] is True and edit["refit"] in (None, "done") and edit["error"] is None
    head = service.model()
    if edit["refit"] == "done":  # the refit is a version of its own
        assert head["version"] == 2 and service.runtime.store.version(2).cause == f"refit:{a}"
    assert ask(service, PERU["prompt"]).startswith("Quito")
    assert ask(service, UNRELATED) == base_unrelated  # outside every scope: the exact base weights

    b = service.post_edit(HAMLET)
    service.wait(b)
    settled(service, b)
    assert ask(service, PERU["prompt"]).startswith("Quito") and ask(service, HAMLET["prompt"]).startswith("Dickens")
    assert ask(service, UNRELATED) == base_unrelated
    wait_until(lambda: service.model()["health"]["capability"] is not None, what="the capability run")
    wait_until(lambda: service.model()["health"]["background_pending"] == 0, what="the background metrics")
    model = service.model()
    assert model["memory"] == "routed" and model["health"]["active_edits"] == 2
    assert model["health"]["capability"] == 100.0 and model["health"]["background_pending"] == 0
    shown = [service.client.get(f"/edits/{e}").json() for e in (a, b)]
    assert model["state_sha256"] == expected_sha(components, service.settings.store_dir, shown)

    metrics = service.wait_metrics(a)["metrics"]
    assert metrics["reliability_plain"]["after"] == 100.0 and metrics["reliability_chat"]["after"] == 100.0
    assert metrics["probe_locality_generation"]["after"] == 100.0 and metrics["probe_locality_generation"]["n"] >= 10
    # four other questions about Peru (the guessed subject), scored whatever the tiny model answers
    assert metrics["subject_locality_generation"]["n"] == 4 and metrics["subject_hijack"]["n"] == 4
    assert metrics["subject_mentions"]["n"] == 4 and metrics["subject_mentions"]["after"] >= metrics["subject_hijack"]["after"]
    assert 0.0 <= metrics["subject_locality_generation"]["after"] <= 100.0

    service.client.delete(f"/edits/{a}")
    service.wait(a, ("rolled_back",))
    assert ask(service, PERU["prompt"]) == base_peru  # as it answered without the edit
    assert ask(service, HAMLET["prompt"]).startswith("Dickens")  # the other edit still holds
    model = service.model()
    assert model["active_edits"] == [b]
    assert model["state_sha256"] == expected_sha(components, service.settings.store_dir, [service.client.get(f"/edits/{b}").json()])


def test_an_old_version_answers_with_the_delta_it_had_then(service):
    a = service.post_edit(PERU)
    service.wait(a)
    if settled(service, a)["refit"] != "done":
        pytest.skip("the editor's own delta took; no refit version to compare with")
    instant, refit = service.runtime.versions.get(1), service.runtime.versions.get(2)
    assert instant.state_sha256 == service.runtime.store.version(1).state_sha256
    assert refit.state_sha256 == service.runtime.store.version(2).state_sha256 != instant.state_sha256


def test_an_edit_whose_questions_catch_unrelated_ones_is_refused(service):
    base = ask(service, UNRELATED)
    generic = ["The capital of Japan is", "The largest planet in the solar system is", "Water is made of hydrogen and"]
    broad = service.post_edit({"prompt": "The capital of Peru is", "target_new": "Paris", "rephrase_prompts": generic})
    edit = service.wait(broad, ("failed",))
    assert "too broad" in edit["error"] and service.model()["version"] == 0
    assert ask(service, UNRELATED) == base


def test_an_edit_is_published_quick_fitted_and_refit_from_the_editors_delta(settings, components):
    """The version an edit makes holds the editor's delta plus a quick fit (`refit.QUICK`);
    the full refit starts again from the editor's delta, not from the quick fit."""
    with Service(settings.model_copy(update={"refit": True, "quick_refit": True}), components) as svc:
        worker = svc.runtime.worker
        worker.refit = RefitConfig(lr=3e-2, steps=100, rank=8, min_prob=0.006, subject_weight=1.0)
        # a bar the tiny model never reaches: the quick fit always takes its 5 steps
        worker.quick = dataclasses.replace(QUICK, steps=5, min_prob=0.99)
        a = svc.post_edit(PERU)
        assert svc.wait(a)["version"] == 1
        edit = settled(svc, a)
        assert edit["refit"] == "done" and edit["took"] is True, edit
        store = svc.runtime.store
        published, refit = store.delta_at(store.version(1))(a), store.delta_of_edit(a)
        assert store.version(2).cause == f"refit:{a}"
        # the quick fit is narrow (routed only to questions worded like its own) and the refit is not
        assert MemoryEntry(a, published, ()).narrow and not MemoryEntry(a, refit, ()).narrow
        fitted = components.editor.spec.edit_params[-worker.refit.n_weights :]
        assert set(published.factors) == set(refit.factors)
        for name, (left, right) in refit.factors.items():
            # the same width: one rank-8 correction on the editor's delta each, not a second on the first
            assert published.factors[name][0].shape[1] == left.shape[1] and published.factors[name][1].shape[0] == right.shape[0]
            width = left.shape[1] - (8 if name in fitted else 0)  # the editor's own factors come first in both
            torch.testing.assert_close(published.factors[name][0][:, :width], left[:, :width])
            torch.testing.assert_close(published.factors[name][1][:width], right[:width])
            if name in fitted:  # and each adds its own correction to them
                assert not torch.equal(published.factors[name][0][:, width:], left[:, width:])


def test_a_refit_left_unfinished_restarts_from_the_editors_delta(settings, components):
    """A worker that died while an edit's refit was pending: the next one computes the
    editor's delta again and refits from it, not from the quick-fitted delta it published."""
    quick = dataclasses.replace(QUICK, steps=5, min_prob=0.99)  # the tiny model: always 5 steps
    with Service(settings.model_copy(update={"quick_refit": True}), components) as svc:  # no refit here
        svc.runtime.worker.quick = quick
        a = svc.post_edit(PERU)
        assert svc.wait(a)["version"] == 1
        wait_until(lambda: svc.client.get(f"/edits/{a}").json()["took"] is not None, what="the check")
        # with no refit the quick fit serves for good, narrow, and its state hash is the one its files give
        edit = svc.client.get(f"/edits/{a}").json()
        assert svc.runtime.state.current().memory.entries[0].narrow
        assert svc.model()["state_sha256"] == expected_sha(components, svc.settings.store_dir, [edit])
        svc.runtime.store.set_took(a, took=None, refit="pending")  # as a worker that died mid-refit left it
    with Service(settings.model_copy(update={"refit": True, "quick_refit": True}), components) as svc:
        edit = settled(svc, a)
        assert edit["refit"] == "done", edit
        store = svc.runtime.store
        published, refit = store.delta_at(store.version(1))(a), store.delta_of_edit(a)
        assert store.version(2).cause == f"refit:{a}"
        # read from the store's files by a new worker: the quick fit is narrow and the refit is not
        assert MemoryEntry(a, published, ()).narrow and not MemoryEntry(a, refit, ()).narrow
        for name, (left, right) in refit.factors.items():
            assert published.factors[name][0].shape[1] == left.shape[1]  # one correction each, not two
            width = left.shape[1] - (8 if name in components.editor.spec.edit_params[-svc.runtime.worker.refit.n_weights :] else 0)
            torch.testing.assert_close(published.factors[name][0][:, :width], left[:, :width])
            torch.testing.assert_close(published.factors[name][1][:width], right[:width])


def test_a_refit_that_does_not_take_leaves_the_quick_fit(settings, components):
    """Where the full refit ends without the edit's answer and the quick fit had it, the
    published quick fit stays (no refit version) and the edit says why."""
    with Service(settings.model_copy(update={"refit": True, "quick_refit": True}), components) as svc:
        worker = svc.runtime.worker
        worker.quick = dataclasses.replace(QUICK, min_prob=0.006)
        worker.refit = RefitConfig(steps=0)  # a refit that stops before its first step: the editor's delta alone
        base = ask(svc, PERU["prompt"])
        a = svc.post_edit(PERU)
        assert svc.wait(a)["version"] == 1
        edit = settled(svc, a)
        assert edit["took"] is True and edit["refit"] == "failed: the refit did not take; the quick fit stays", edit
        store = svc.runtime.store
        assert store.head().version == 1 and store.delta_of_edit(a).meta["refit_steps"] > 0  # the quick fit's delta
        assert svc.runtime.state.current().memory.entries[0].narrow  # so the edit stays narrow
        assert ask(svc, PERU["prompt"]).startswith("Quito") and not base.startswith("Quito")
