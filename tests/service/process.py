"""The real service as its own process: `instructedit serve` (python -m
service.commands serve) with the tiny model and an untrained editor, on
loopback. It can be SIGKILLed and started again on the same store, which a
server in a thread cannot. Used by the contract, crash and fault tests and by
bench/reliability.py, bench/crash_safety.py and bench/load.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """`env` adds INSTRUCTEDIT_* settings (e.g. API keys, caps); `log` collects its output."""

    def __init__(
        self, store_dir: Path, *, redis_url: str | None = None, port: int | None = None, env: dict | None = None, log: Path | None = None
    ):
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.redis_url = redis_url
        self.extra_env = dict(env or {})
        self.log = Path(log) if log else self.store_dir.parent / f"service-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INSTRUCTEDIT_") and k != "REDIS_URL"}
        env.update(
            PYTHONPATH=str(ROOT),
            INSTRUCTEDIT_ALLOW_UNTRAINED_EDITOR="true",
            INSTRUCTEDIT_EDITOR_PATH=str(self.store_dir.parent / "no-editor.safetensors"),
            INSTRUCTEDIT_LOG_LEVEL="warning",
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120) -> "ServiceProcess":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"the service on port {self.port} is already running (pid {self.proc.pid})")
        args = [sys.executable, "-m", "service.commands", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--model", "tiny-llama", "--store", str(self.store_dir)]  # fmt: skip
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, env=self.environment(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}; log: {self.log}\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the service did not answer /healthz within {timeout}s; log: {self.log}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
