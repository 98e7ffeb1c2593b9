"""The HTTP API end to end: uvicorn on a free port, httpx over TCP, a real
redis-server in redis mode. Every test runs in both queue modes (`mode`)."""

import json
import threading

import httpx
import pytest

from editor_core.editors import MEND, MENDConfig
from service.components import Components
from service.generation import Sampling, generate

from harness import Service, assert_problem, base_sha, expected_sha, wait_until, without_health

PERU = {
    "prompt": "The capital of Peru is",
    "target_new": "Quito",
    "rephrase_prompts": ["Peru has its capital in"],
    "locality": [{"prompt": "The capital of Chile is", "answer": "Santiago"}],
    "portability": [{"prompt": "The capital of Peru lies in the country of", "answer": "Ecuador"}],
}


@pytest.fixture
def service(settings, components):
    with Service(settings, components) as svc:
        yield svc


def test_edit_generate_metrics_rollback(service, components):
    base = service.model()
    assert base["version"] == 0 and base["state_sha256"] == base_sha(components) and base["active_edits"] == []

    r = service.client.post("/edits", json=PERU)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    edit_id = r.json()["id"]
    assert r.headers["location"] == f"/edits/{edit_id}"
    edit = service.wait(edit_id)
    assert edit["status"] == "applied" and edit["version"] == 1 and edit["error"] is None
    assert edit["queued_at"] <= edit["started_at"] <= edit["applied_at"]
    assert edit["durations"]["total_seconds"] >= edit["durations"]["apply_seconds"] >= 0

    gen = service.client.post("/generate", json={"prompt": PERU["prompt"], "max_new_tokens": 5})
    assert gen.status_code == 200 and gen.json()["model_version"] == 1
    assert gen.json()["text"].startswith("Quito")  # the step -10 editor makes the edit visible on the tiny model

    metrics = service.wait_metrics(edit_id)
    assert metrics["ready"] is True and metrics["version"] == 1
    scores = metrics["metrics"]
    assert scores["reliability"]["n"] == 1 and scores["reliability"]["after"] > scores["reliability"]["before"]
    assert scores["generalization"]["n"] == 1 and scores["portability"]["n"] == 1 and scores["locality"]["n"] == 1
    assert scores["locality"]["before"] == 100.0 and 0 <= scores["locality"]["after"] <= 100
    assert scores["probe_locality"]["n"] >= 10 and scores["probe_locality"]["after"] is not None

    edited = service.model()
    assert edited["active_edits"] == [edit_id]
    assert edited["state_sha256"] == expected_sha(components, service.settings.store_dir, [edit])
    assert edited["state_sha256"] != base["state_sha256"]

    r = service.client.delete(f"/edits/{edit_id}")
    assert r.status_code == 202
    gone = service.wait(edit_id, ("rolled_back",))
    assert gone["rollback_version"] == 2 and gone["cancelled"] is False
    after = service.model()
    assert after["version"] == 2 and after["active_edits"] == [] and after["state_sha256"] == base["state_sha256"]
    # A second DELETE changes nothing.
    assert service.client.delete(f"/edits/{edit_id}").json()["status"] == "rolled_back"
    assert service.model()["version"] == 2


def test_rolling_back_the_first_of_two_keeps_the_second(service, components):
    first = service.post_edit(PERU)
    second = service.post_edit({"prompt": "The largest ocean is the", "target_new": "Atlantic"})
    assert service.wait(first)["status"] == "applied"
    b = service.wait(second)
    assert b["status"] == "applied" and b["version"] == 2
    service.client.delete(f"/edits/{first}")
    service.wait(first, ("rolled_back",))
    model = service.model()
    assert model["version"] == 3 and model["active_edits"] == [second]
    assert model["state_sha256"] == expected_sha(components, service.settings.store_dir, [b])
    assert service.client.get(f"/edits/{second}").json()["status"] == "applied"


def test_batch_is_one_version(service):
    body = {"edits": [PERU, {"prompt": "Water boils at", "target_new": "50 degrees"}, {"prompt": "The sky is", "target_new": "green"}]}
    edit_id = service.post_edit(body)
    edit = service.wait(edit_id)
    assert edit["status"] == "applied" and edit["version"] == 1 and edit["n_records"] == 3
    assert service.model()["active_edits"] == [edit_id] and service.model()["version"] == 1
    assert service.wait_metrics(edit_id)["metrics"]["reliability"]["n"] == 3


def test_idempotency_key(service):
    headers = {"Idempotency-Key": "retry-me-1"}
    first = service.client.post("/edits", json=PERU, headers=headers)
    again = service.client.post("/edits", json=PERU, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    service.wait(first.json()["id"])
    assert len(service.client.get("/edits").json()["items"]) == 1
    assert service.model()["version"] == 1
    other = service.client.post("/edits", json={**PERU, "target_new": "Lima"}, headers=headers)
    assert_problem(other, 409)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": "", "target_new": "x"},
        {"prompt": "   ", "target_new": "x"},
        {"prompt": "p"},
        {"prompt": "p" * 5000, "target_new": "x"},
        {"prompt": "p", "target_new": "x", "locality": [{"prompt": "q"}]},
        {"prompt": "p", "target_new": "x", "unknown_field": 1},
        {"edits": []},
        {"edits": [{"prompt": "p", "target_new": ""}]},
        [1, 2],
    ],
)
def test_bad_edit_input_is_422_and_changes_nothing(service, body):
    before = service.model()
    body_problem = assert_problem(service.client.post("/edits", json=body), 422)
    assert body_problem["errors"]
    assert service.client.get("/edits").json()["items"] == []
    assert without_health(service.model()) == without_health(before)


def test_malformed_json_and_unknown_ids(service):
    r = service.client.post("/edits", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(r, 422)
    for method, path in [("GET", "/edits/nope"), ("DELETE", "/edits/nope"), ("GET", "/edits/nope/metrics"), ("GET", "/no/such/route")]:
        assert_problem(service.client.request(method, path), 404)
    assert_problem(service.client.get("/edits", params={"cursor": "garbage!"}), 422)
    assert_problem(service.client.get("/edits", params={"status": "sideways"}), 422)


def test_failed_edit_is_never_applied(service):
    before = service.model()
    edit_id = service.post_edit({"prompt": "FAIL this one", "target_new": "x"})
    edit = service.wait(edit_id)
    assert edit["status"] == "failed" and "injected failure" in edit["error"] and edit["version"] is None
    assert without_health(service.model()) == without_health(before)
    assert_problem(service.client.get(f"/edits/{edit_id}/metrics"), 409)
    assert_problem(service.client.delete(f"/edits/{edit_id}"), 409)


def test_rolling_back_a_queued_edit_cancels_it(service, components):
    editor = components.editor
    editor.gate("cancel")
    try:
        blocker = service.post_edit({"prompt": "GATE:cancel hold the worker", "target_new": "x"})
        service.wait(blocker, ("running",))
        queued = service.post_edit(PERU)
        assert service.client.get(f"/edits/{queued}").json()["status"] == "queued"
        assert service.client.get(f"/edits/{queued}/metrics").status_code == 202
        assert service.client.delete(f"/edits/{queued}").status_code == 202
    finally:
        editor.release("cancel")
    assert service.wait(blocker)["status"] == "applied"
    cancelled = service.wait(queued)
    assert cancelled["status"] == "rolled_back" and cancelled["cancelled"] is True and cancelled["version"] is None
    model = service.model()
    assert model["active_edits"] == [blocker] and model["version"] == 1


def test_list_pagination_and_status_filter(service):
    ids = [service.post_edit({"prompt": f"Fact number {i} is", "target_new": "true"}) for i in range(3)]
    ids.append(service.post_edit({"prompt": "FAIL here", "target_new": "x"}))
    for edit_id in ids:
        service.wait(edit_id)
    page = service.client.get("/edits", params={"limit": 3}).json()
    assert [e["id"] for e in page["items"]] == ids[::-1][:3] and page["next_cursor"]
    rest = service.client.get("/edits", params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert [e["id"] for e in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    failed = service.client.get("/edits", params={"status": "failed"}).json()["items"]
    assert [e["id"] for e in failed] == [ids[3]]


def test_generate_checks_and_stream(service):
    assert_problem(service.client.post("/generate", json={"prompt": "hi", "max_new_tokens": 10_000}), 422)
    assert_problem(service.client.post("/generate", json={"prompt": ""}), 422)
    missing = assert_problem(service.client.post("/generate", json={"prompt": "hi", "version": 7}), 404)
    assert missing["newest_version"] == 0 and "version 7" in missing["detail"]
    ok = service.client.post("/generate", json={"prompt": "hi", "max_new_tokens": 4, "version": 0}).json()
    assert ok["model_version"] == 0 and ok["tokens"] <= 4
    seeded = {"prompt": "hi", "max_new_tokens": 6, "temperature": 1.0, "top_p": 0.9, "seed": 3}
    sampled = [service.client.post("/generate", json=seeded).json()["text"] for _ in range(2)]
    assert sampled[0] == sampled[1]

    events = []
    with service.client.stream("POST", "/generate", json={"prompt": "The capital", "max_new_tokens": 6, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-model-version"] == "0"
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line.split(":", 1)[1])))
    assert events[-1][0] == "done" and events[-1][1]["model_version"] == 0
    assert "".join(data["text"] for kind, data in events if kind == "token") == events[-1][1]["text"]
    greedy = service.client.post("/generate", json={"prompt": "The capital", "max_new_tokens": 6}).json()
    assert greedy["text"] == events[-1][1]["text"]


def test_health_ready_metrics_docs(service):
    assert service.client.get("/healthz").json()["status"] == "ok"
    ready = service.client.get("/readyz")
    assert ready.status_code == 200 and all(ready.json()["checks"].values())
    service.wait(service.post_edit(PERU))
    text = service.client.get("/metrics").text
    for name in ("instructedit_queue_depth", "instructedit_edit_latency_seconds_bucket", "instructedit_generation_latency_seconds",
                 "instructedit_model_version 1.0", 'instructedit_edits_total{status="applied"} 1.0'):
        assert name in text
    assert service.client.get("/docs").status_code == 200
    paths = service.client.get("/openapi.json").json()["paths"]
    assert {"/edits", "/edits/{edit_id}", "/edits/{edit_id}/metrics", "/generate", "/model", "/healthz", "/readyz"} <= set(paths)


def test_each_generation_runs_on_one_whole_version(service, components):
    """Generate without pause while edits land: every answer equals what its
    reported version gives when rebuilt from the store (no half-swapped weights)."""
    seen, done = [], threading.Event()

    def hammer():
        with httpx.Client(base_url=service.url, timeout=30) as client:
            while not done.is_set():
                out = client.post("/generate", json={"prompt": "The sky is", "max_new_tokens": 6}).json()
                seen.append((out["model_version"], out["text"]))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        wait_until(lambda: seen)  # at least one answer from version 0
        for i, word in enumerate(["green", "purple", "orange"]):
            service.wait(service.post_edit({"prompt": "The sky is", "target_new": word, "rephrase_prompts": [f"Sky colour {i}:"]}))
        wait_until(lambda: seen[-1][0] == 3)  # and one from the last version
    finally:
        done.set()
        thread.join(30)
    rt = service.runtime
    ids = components.tokenizer("The sky is")["input_ids"]
    expected = {}
    for version in sorted({v for v, _ in seen}):
        tree = rebuilt(rt, version).tree_for("The sky is")
        expected[version] = generate(tree, components.tokenizer, ids, Sampling(6)).text
    assert all(text == expected[version] for version, text in seen), (seen, expected)


@pytest.fixture(scope="module")
def instructed(components):
    editor = MEND.for_model(components.model, MENDConfig(rank=8, instruct=True, step_init=-10.0))
    return Components(components.model, components.tokenizer, editor, trained=False)


def test_instructed_editor_needs_a_known_task(settings, instructed):
    with Service(settings, instructed) as svc:
        body = assert_problem(svc.client.post("/edits", json={**PERU, "task": "no-such-task"}), 422)
        assert "unknown task" in body["detail"]
        edit = svc.wait(svc.post_edit({**PERU, "task": "zsre", "instruction": "Answer with the new capital."}))
        assert edit["status"] == "applied" and edit["records"][0]["task"] == "zsre"
        assert svc.model()["editor"]["instruct"] is True


def rebuilt(rt, version: int):
    """The snapshot of `version`, assembled here from the store's rows and files."""
    row = rt.store.version(version)
    return rt.state.assemble(row.version, row.active, rt.store.delta_at(row), rt.store.scope_of)
