"""API keys end to end: uvicorn on loopback, httpx over TCP, the embedded queue
(auth does not depend on the queue). The keys are made the way an operator
makes them, with `instructedit keys create`."""

import logging
import sqlite3

import pytest
from typer.testing import CliRunner

from service.app import create_app
from service.auth import KeyConfigError, KeyRing, Scope, UnsafeBind, hash_key, parse_keys
from service.commands import app as cli
from service.ratelimit import RateLimiter
from service.settings import Settings
from service.store import Store

from harness import Service, make_settings

PROBLEM = "application/problem+json"
EDIT = {"prompt": "The capital of Peru is", "target_new": "Quito"}


def make_key(keys_file, name: str, scope: str) -> str:
    result = CliRunner().invoke(cli, ["keys", "create", name, "--scope", scope, "--file", str(keys_file)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, components):
    """One service with three keys (ask, edit, admin) in a keys file."""
    root = tmp_path_factory.mktemp("auth")
    keys_file = root / "keys.txt"
    tokens = {scope: make_key(keys_file, f"{scope}-key", scope) for scope in ("ask", "edit", "admin")}
    settings = make_settings(root / "store", api_keys_file=keys_file, rate_limit_per_second=0)
    with Service(settings, components) as svc:
        yield svc, tokens


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    return r.json()


def test_keys_file_holds_hashes_only(tmp_path):
    keys_file = tmp_path / "keys.txt"
    token = make_key(keys_file, "alice", "edit")
    assert token.startswith("iek_") and len(token) > 40
    text = keys_file.read_text()
    assert token not in text and text.strip() == f"alice:edit:{hash_key(token)}"
    assert keys_file.stat().st_mode & 0o077 == 0
    again = CliRunner().invoke(cli, ["keys", "create", "alice", "--file", str(keys_file)])
    assert again.exit_code == 2 and "unique" in again.output


def test_every_route_but_health_needs_a_key(keyed):
    svc, _ = keyed
    assert svc.client.get("/healthz").status_code == 200
    assert svc.client.get("/readyz").status_code == 200
    for method, path in [
        ("GET", "/model"),
        ("GET", "/edits"),
        ("POST", "/edits"),
        ("GET", "/edits/x"),
        ("DELETE", "/edits/x"),
        ("GET", "/edits/x/metrics"),
        ("POST", "/generate"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ]:
        r = svc.client.request(method, path, json=EDIT if method == "POST" else None)
        body = assert_problem(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        assert "API key" in body["detail"]
    r = svc.client.get("/model", headers=bearer("iek_not-a-key"))
    assert_problem(r, 401)
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert_problem(svc.client.get("/model", headers={"Authorization": "Basic YTpi"}), 401)


def test_scopes(keyed):
    svc, tokens = keyed
    ask, edit, admin = (bearer(tokens[s]) for s in ("ask", "edit", "admin"))
    assert svc.client.get("/model", headers=ask).status_code == 200
    assert svc.client.post("/generate", json={"prompt": "hi", "max_new_tokens": 2}, headers=ask).status_code == 200
    assert svc.client.get("/openapi.json", headers=ask).json()["components"]["securitySchemes"]
    r = svc.client.post("/edits", json=EDIT, headers=ask)
    assert "needs 'edit'" in assert_problem(r, 403)["detail"] and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert_problem(svc.client.get("/metrics", headers=ask), 403)
    assert_problem(svc.client.get("/metrics", headers=edit), 403)
    assert svc.client.get("/metrics", headers=admin).status_code == 200

    r = svc.client.post("/edits", json=EDIT, headers=edit)
    assert r.status_code == 202, r.text
    edit_id = r.json()["id"]
    svc.client.headers.update(ask)
    try:
        applied = svc.wait(edit_id)
        assert applied["status"] == "applied" and applied["author"] == "edit-key" and applied["rolled_back_by"] is None
        assert_problem(svc.client.delete(f"/edits/{edit_id}"), 403)
        assert svc.client.delete(f"/edits/{edit_id}", headers=admin).status_code == 202
        done = svc.wait(edit_id, statuses=("rolled_back",))
        assert done["author"] == "edit-key" and done["rolled_back_by"] == "admin-key"
    finally:
        del svc.client.headers["Authorization"]


def test_keys_never_reach_the_log(keyed, caplog):
    svc, tokens = keyed
    with caplog.at_level(logging.DEBUG):
        svc.client.get("/model", headers=bearer(tokens["admin"]))
        svc.client.get("/model", headers=bearer(tokens["admin"] + "x"))
        svc.client.post("/edits", json={"prompt": ""}, headers=bearer(tokens["edit"]))
    assert caplog.records  # something was logged, and none of it is a key
    assert not any(t in caplog.text or t[4:] in caplog.text for t in tokens.values())


def test_rate_limit_per_key(tmp_path, components):
    keys_file = tmp_path / "keys.txt"
    a, b = make_key(keys_file, "a", "ask"), make_key(keys_file, "b", "ask")
    settings = make_settings(tmp_path / "store", api_keys_file=keys_file, rate_limit_per_second=0.5, rate_limit_burst=3)
    with Service(settings, components) as svc:
        assert [svc.client.get("/model", headers=bearer(a)).status_code for _ in range(3)] == [200, 200, 200]
        r = svc.client.get("/model", headers=bearer(a))
        assert_problem(r, 429)
        assert int(r.headers["Retry-After"]) == 2  # one token at 0.5/s
        assert svc.client.get("/model", headers=bearer(b)).status_code == 200  # b has its own bucket
        assert svc.client.get("/healthz").status_code == 200  # probes are never limited


def test_token_bucket_refills():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert limiter.take("k") is None and limiter.take("k") is None
    assert limiter.take("k") == 1
    now[0] += 0.5
    assert limiter.take("k") is None and limiter.take("k") == 1
    assert RateLimiter(rate=0, burst=1).take("k") is None


def test_public_bind_without_keys_refuses_to_start(tmp_path):
    with pytest.raises(UnsafeBind, match="INSTRUCTEDIT_ALLOW_UNAUTHENTICATED"):
        create_app(make_settings(tmp_path, host="0.0.0.0"))
    create_app(make_settings(tmp_path, host="0.0.0.0", allow_unauthenticated=True))
    create_app(make_settings(tmp_path, host="::1"))
    create_app(make_settings(tmp_path, host="0.0.0.0", api_keys=f"ops:admin:{hash_key('secret')}"))
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--store", str(tmp_path / "s")])
    assert result.exit_code == 2 and "refusing to serve on 0.0.0.0" in result.output


def test_bad_key_lines_are_startup_errors(tmp_path):
    good = hash_key("k")
    assert parse_keys(f"a:ask:{good}, b:admin:{good.upper()}  # ops", source="env")[1].scope == Scope.admin
    for line in ["a:ask", f"a:root:{good}", "a:ask:abc", f"a b:ask:{good}"]:
        with pytest.raises(KeyConfigError):
            parse_keys(line, source="env")
    with pytest.raises(KeyConfigError, match="unique"):
        KeyRing(parse_keys(f"a:ask:{good}\na:edit:{good}", source="env"))
    with pytest.raises(KeyConfigError, match="does not exist"):
        create_app(Settings(api_keys_file=tmp_path / "missing.txt"))


def test_old_store_gains_the_author_columns(tmp_path, components):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    db = sqlite3.connect(store_dir / "manifest.sqlite")
    db.execute(
        "CREATE TABLE edits (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, idempotency_key TEXT UNIQUE, "
        "request_sha256 TEXT NOT NULL, records TEXT NOT NULL, status TEXT NOT NULL, version INTEGER, delta_sha256 TEXT, "
        "queued_at REAL NOT NULL, started_at REAL, applied_at REAL, finished_at REAL, rollback_requested_at REAL, "
        "rolled_back_at REAL, rollback_version INTEGER, error TEXT, metrics TEXT, metrics_error TEXT)"
    )
    db.execute("INSERT INTO edits (id, request_sha256, records, status, queued_at) VALUES ('old', 'x', '[]', 'failed', 1.0)")
    db.commit()
    db.close()
    store = Store.open(store_dir, identity={"m": 1}, base_sha256="b")
    try:
        assert store.edit("old").author is None
        row, _ = store.create_edit(edit_id="new", records=[], request_sha256="y", idempotency_key=None, author="alice")
        assert row.author == "alice"
    finally:
        store.close()
