"""Garbage and hostile requests get a clear 4xx problem+json and change nothing.
Real uvicorn on loopback, the embedded queue (the checks run before the queue)."""

import json

import pytest

from harness import Service, assert_problem, make_settings, without_health

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def service(tmp_path_factory, components):
    settings = make_settings(tmp_path_factory.mktemp("hostile") / "store", max_body_bytes=64 * 1024)
    with Service(settings, components) as svc:
        yield svc


problem = assert_problem  # problem+json with every field (harness)


def unchanged(svc, before: dict) -> None:
    assert svc.client.get("/edits").json()["items"] == []
    assert without_health(svc.model()) == without_health(before)


@pytest.mark.parametrize(
    "content, status, says",
    [
        (b"", 422, "body"),
        (b"   ", 422, "JSON"),
        (json.dumps({"prompt": " \t\n", "target_new": "x"}).encode(), 422, "prompt"),
        (json.dumps({"prompt": "p", "target_new": ""}).encode(), 422, "target_new"),
        (b'{"prompt": "\xff\xfe caf\xe9", "target_new": "x"}', 400, "UTF-8"),
        (json.dumps({"prompt": "p", "target_new": "x", "admin": True}).encode(), 422, "admin"),
        (json.dumps({"prompt": "p", "target_new": "x", "task": "drop-tables"}).encode(), 422, "unknown task"),
        (json.dumps({"prompt": "p", "target_new": "x", "instruction": "two\nlines"}).encode(), 422, "instruction"),
        (json.dumps({"prompt": "\U0001f600" * 1000, "target_new": "x"}).encode(), 422, "tokens"),
        (json.dumps({"prompt": "p", "target_new": "x", "rephrase_prompts": ["q" * 1999]}).encode(), 422, "rephrase_prompts[0]"),
        (json.dumps({"prompt": "p" * 1_000_000, "target_new": "x"}).encode(), 413, "at most"),
    ],
    ids=["empty", "whitespace-body", "whitespace-prompt", "empty-target", "not-utf8", "unknown-field", "unknown-task",
         "multiline-instruction", "over-context", "over-context-rephrase", "1MB"],
)
def test_garbage_edit_is_4xx_and_changes_nothing(service, content, status, says):
    before = service.model()
    body = problem(service.client.post("/edits", content=content, headers=JSON), status)
    assert says in body["detail"] or says in json.dumps(body.get("errors", "")), body
    unchanged(service, before)


def test_streamed_body_over_the_limit_is_413(service):
    before = service.model()

    def chunks():
        for _ in range(200):
            yield b" " * 1024  # no Content-Length: the limit counts what arrives

    problem(service.client.post("/edits", content=chunks(), headers=JSON), 413)
    unchanged(service, before)


def test_405_names_every_method_of_the_path(service):
    r = service.client.put("/edits", json={})
    problem(r, 405)
    assert r.headers["Allow"] == "GET, POST"
    r = service.client.patch("/edits/abc")
    problem(r, 405)
    assert r.headers["Allow"] == "DELETE, GET"


def test_cursor_shapes(service):
    assert service.client.get("/edits", params={"cursor": ""}).json() == {"items": [], "next_cursor": None}
    assert service.client.get("/edits", params={"cursor": "s999"}).status_code == 200
    problem(service.client.get("/edits", params={"cursor": "seq:1"}), 422)


def test_schema_states_what_is_enforced(service):
    schema = service.client.get("/openapi.json").json()
    gen = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert gen["max_new_tokens"]["maximum"] == service.settings.max_new_tokens
    assert "maximum" in gen["seed"]["anyOf"][0]
    task = schema["components"]["schemas"]["EditCreate"]["properties"]["task"]
    assert "counterfact" in task["enum"]
    post = schema["paths"]["/edits"]["post"]["responses"]
    assert {"400", "413", "422"} <= set(post)
    assert "securitySchemes" not in schema.get("components", {}) and "401" not in post  # no keys configured here
