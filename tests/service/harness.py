"""Real things for the service tests: a private redis-server, a uvicorn server
in a thread on a free port, and a tiny model with an editor we can steer.

No fakes: the Redis is a real `redis-server` (its own port, no persistence),
the HTTP is real (httpx over TCP to uvicorn).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from editor_core.delta import Delta, base_weights, materialize, tensors_sha256
from editor_core.editors import MEND, MENDConfig
from editor_core.models import load_model
from editor_core.routing import MemoryEntry, RoutedMemory
from service.app import create_app
from service.components import Components
from service.records import decode_records, scope_of_records
from service.settings import Settings

TERMINAL = ("applied", "failed", "rolled_back")


def wait_until(condition, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s")
        time.sleep(0.02)


# --------------------------------------------------------------------------- redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of our own; `kill` and `start` again give an EMPTY one on the same port."""

    def __init__(self, port: int | None = None):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


# --------------------------------------------------------------------------- model and editor


class SteerableEditor:
    """An untrained MEND (its edits are visible on the tiny model: step -10) whose
    compute fails for a prompt containing "FAIL" and waits for `release(name)`
    for a prompt containing "GATE:<name>" (in the worker's thread, so the
    service stays responsive while an edit is "running")."""

    def __init__(self, inner: MEND):
        self.inner, self.spec, self.config, self.tag = inner, inner.spec, inner.config, inner.tag
        self._gates: dict[str, threading.Event] = {}

    def eval(self):
        self.inner.eval()
        return self

    def gate(self, name: str) -> None:
        self._gates[name] = threading.Event()

    def release(self, name: str) -> None:
        self._gates[name].set()

    def compute_delta(self, model, tokenizer, records):
        for r in records:
            if "FAIL" in r.prompt:
                raise ValueError(f"cannot edit {r.prompt!r} (injected failure)")
            if "GATE:" in r.prompt:
                name = r.prompt.split("GATE:", 1)[1].split()[0]
                if not self._gates[name].wait(60):
                    raise TimeoutError(f"gate {name} was never released")
        return self.inner.compute_delta(model, tokenizer, records)


def tiny_components() -> Components:
    model, tok = load_model("tiny-llama", device="cpu")
    inner = MEND.for_model(model, MENDConfig(rank=8, instruct=False, step_init=-10.0))
    return Components(model, tok, SteerableEditor(inner.eval()), editor_path=None, trained=False)  # eval: as the service runs it


def expected_sha(components: Components, store_dir: Path, edits: list[dict]) -> str:
    """The state hash of base + these edits (as `GET /edits/{id}` shows them), computed here from
    the store's delta files: the routed memory's hash (service.state), or the base's with no edit."""
    base = base_weights(components.model, components.editor.spec.edit_params)
    if not edits:
        return tensors_sha256(base)
    entries = [
        MemoryEntry(e["id"], Delta.load(store_dir / "deltas" / f"{e['delta_sha256']}.safetensors"),
                    scope_of_records(decode_records(e["id"], e["records"])))
        for e in edits
    ]
    return hashlib.sha256(f"{tensors_sha256(base)}:{RoutedMemory(entries).sha256()}".encode()).hexdigest()


def summed_sha(components: Components, store_dir: Path, delta_shas: list[str]) -> str:
    """sha256 of base + these deltas summed (memory="summed"), computed here."""
    base = base_weights(components.model, components.editor.spec.edit_params)
    deltas = [Delta.load(store_dir / "deltas" / f"{sha}.safetensors") for sha in delta_shas]
    return tensors_sha256(materialize(base, deltas))


PROBLEM = "application/problem+json"


def assert_problem(r, status: int) -> dict:
    """The response is problem+json with this status and every field filled; its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


def without_health(model: dict) -> dict:
    """GET /model less its health, which changes as background work (refits, the capability run) finishes."""
    return {k: v for k, v in model.items() if k != "health"}


def base_sha(components: Components) -> str:
    return expected_sha(components, Path("/nonexistent"), [])


# --------------------------------------------------------------------------- the service


def make_settings(store_dir: Path, redis_url: str | None = None, **overrides) -> Settings:
    """Settings as a test wants them: tiny model, its own store (hence its own Redis keys), snapshots every 2 versions."""
    values = dict(
        model="tiny-llama",
        store_dir=store_dir,
        redis_url=redis_url,
        snapshot_every=2,
        max_new_tokens=64,
        refit=False,  # a refit adds a version per edit; tests of refits turn it on themselves
        quick_refit=False,  # the steered editor's delta as it is; tests of the quick fit turn it on
        editor_path=store_dir / "no-editor.safetensors",
    )
    return Settings(**{**values, **overrides})


class Service:
    """create_app(settings) served by uvicorn in a thread, on 127.0.0.1 and a free port.
    With components=None the app loads model and editor from the settings."""

    def __init__(self, settings: Settings, components: Components | None, start_timeout: float = 60):
        self.settings, self.start_timeout = settings, start_timeout
        self.app = create_app(settings, components=components)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def __enter__(self) -> "Service":
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start (see the log above)")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"

    @property
    def runtime(self):
        return self.app.state.runtime

    # ---------------------------------------------------------------- helpers

    def post_edit(self, body: dict, **headers) -> str:
        r = self.client.post("/edits", json=body, headers=headers)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def wait(self, edit_id: str, statuses=TERMINAL, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            edit = self.client.get(f"/edits/{edit_id}").json()
            if edit["status"] in statuses:
                return edit
            if time.monotonic() > deadline:
                raise AssertionError(f"edit {edit_id} still {edit['status']} after {timeout}s")
            time.sleep(0.02)

    def wait_metrics(self, edit_id: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.client.get(f"/edits/{edit_id}/metrics")
            if r.status_code == 200:
                return r.json()
            assert r.status_code == 202 and r.json()["ready"] is False, r.text
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics of {edit_id} not ready after {timeout}s")
            time.sleep(0.02)

    def model(self) -> dict:
        return self.client.get("/model").json()
