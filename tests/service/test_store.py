"""The versioned store and the weights built from it (service/store.py, service/state.py)."""

import pytest

from editor_core.delta import materialize, state_sha256, tensors_sha256
from editor_core.records import EditRecord
from service.records import EditStatus
from service.state import ModelState, fork
from service.store import Store, StoreError


@pytest.fixture
def state(components):
    return ModelState(components.model, components.tokenizer, components.editor.spec.edit_params, memory="summed")


@pytest.fixture
def store(tmp_path, state):
    s = Store.open(tmp_path / "store", identity={"model": "tiny-llama"}, base_sha256=state.base_sha256)
    yield s
    s.close()


def deltas(components, n):
    editor = components.editor
    prompts = ["The sky is", "Grass is", "Snow is", "Coal is"]
    return [editor.compute_delta(components.model, components.tokenizer, [EditRecord("counterfact", p, "purple")]) for p in prompts[:n]]


def commit(store, state, edit_id, delta):
    row, _ = store.create_edit(edit_id=edit_id, records=[{"prompt": "p", "target_new": "t"}], request_sha256="x", idempotency_key=None)
    job = store.job(edit_id)
    store.start_job(job.id)
    sha = store.write_delta(delta)
    active = [*store.head().active, edit_id]
    weights = state.build(
        active, lambda e: delta if e == edit_id else store.delta_of_edit(e), lambda a: store.best_snapshot(a, state.device)
    )
    store.commit_edit(job, delta_sha256=sha, active=active, state_sha256=tensors_sha256(weights))
    return weights


def test_commit_versions_and_idempotency(store, state, components):
    (d,) = deltas(components, 1)
    assert store.head().version == 0 and store.head().state_sha256 == state.base_sha256
    commit(store, state, "a", d)
    head = store.head()
    assert head.version == 1 and head.active == ("a",)
    edit = store.edit("a")
    assert edit.status == EditStatus.applied and edit.version == 1 and edit.delta_sha256 == d.sha256()
    assert (store.root / "deltas" / f"{d.sha256()}.safetensors").exists()
    assert store.unfinished_jobs() == []

    first, created = store.create_edit(edit_id="b", records=[], request_sha256="r", idempotency_key="key")
    again, created_again = store.create_edit(edit_id="c", records=[], request_sha256="r", idempotency_key="key")
    assert created and not created_again and again.id == first.id == "b"
    assert store.request_rollback("b") is not None and store.request_rollback("b") is None
    assert [j.id for j in store.unfinished_jobs()] == ["b", "rollback:b"]
    store.cancel_edit(store.job("rollback:b"))
    assert store.edit("b").status == EditStatus.rolled_back and store.unfinished_jobs() == []


def test_snapshots_give_the_same_bits_as_rebuilding_from_base(store, state, components):
    ds = deltas(components, 4)
    for i, d in enumerate(ds[:3]):
        weights = commit(store, state, f"e{i}", d)
        store.write_snapshot(store.head().version, list(store.head().active), weights)
    # Longest prefix wins: for [e0, e1, e3] the snapshot of [e0, e1].
    n, _ = store.best_snapshot(["e0", "e1", "e3"], state.device)
    assert n == 2
    assert store.best_snapshot(["e1", "e2"], state.device) is None  # [e0...] is no prefix: from base
    by_id = {f"e{i}": d for i, d in enumerate(ds)}
    for active in (["e0", "e1", "e3"], ["e0", "e2"], ["e1", "e2"], ["e0", "e1", "e2"]):
        built = state.build(active, by_id.__getitem__, lambda a: store.best_snapshot(a, state.device))
        assert tensors_sha256(built) == tensors_sha256(materialize(state.base, [by_id[e] for e in active]))


def test_rolling_everything_back_is_the_base_itself(store, state, components):
    (d,) = deltas(components, 1)
    commit(store, state, "a", d)
    weights = state.build([], store.delta_of_edit)
    assert all(weights[n] is state.base[n] for n in state.names)
    tree = fork(components.model, weights)
    assert state_sha256(tree, state.names) == state.base_sha256


def test_fork_shares_tensors_and_leaves_the_model_alone(state, components):
    (d,) = deltas(components, 1)
    model = components.model
    tree = fork(model, materialize(state.base, [d]))
    name = state.names[0]
    assert tree.get_parameter(name) is not model.get_parameter(name)
    assert tree.get_parameter("model.embed_tokens.weight") is model.get_parameter("model.embed_tokens.weight")
    assert state_sha256(model, state.names) == state.base_sha256


def test_store_refuses_another_model_and_a_second_writer(tmp_path, state):
    root = tmp_path / "store"
    store = Store.open(root, identity={"model": "tiny-llama"}, base_sha256=state.base_sha256)
    with pytest.raises(StoreError, match="in use"):
        Store.open(root, identity={"model": "tiny-llama"}, base_sha256=state.base_sha256)
    store.close()
    with pytest.raises(StoreError, match="another base model"):
        Store.open(root, identity={"model": "tiny-gpt2"}, base_sha256="0" * 64)
    Store.open(root, identity={"model": "tiny-llama"}, base_sha256=state.base_sha256).close()
