"""schemathesis over the running service's own OpenAPI schema, every check on.

`run_fuzz` runs the `st` command line (the same run a user would type) and
reads its JSON report (cases, unique failures) and its HAR file (every
response, so 5xx are counted one by one, not per unique failure). Used by
tests/service/test_contract.py and bench/reliability.py.

`ACCEPTED` lists the failures this API means to produce, each with the
reason; docs/RELIABILITY.md repeats them. Anything else fails the test.
"""

from __future__ import annotations

import glob
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SCHEMATHESIS = "4.32.5"  # pinned in pyproject.toml [test]

# (check code, operation) -> why it is not a bug
ACCEPTED = {
    ("ST202", "POST /edits"): (
        "an edit whose texts fit the schema's 2,000 characters but not the model's context (in tokens, instruction "
        "included) gets 422 too-long; a character limit cannot state a token limit, and cutting the prompt would edit another fact"
    ),
    ("ST202", "POST /v1/chat/completions"): (
        "a conversation must hold a user turn with some text to answer; a JSON schema cannot say 'at least one "
        "message of role user with non-empty content', so such requests are refused with OpenAI's 400 invalid_request_error"
    ),
    # schemathesis names the stateful phase, not the operation; DELETE /edits/{edit_id} is the only DELETE.
    ("ST301", "Stateful tests"): (
        "DELETE rolls an edit back; the edit stays readable (status rolled_back, who and when), "
        "because the audit trail of what changed the weights must outlive the change"
    ),
}


ACCEPTED_REJECTIONS = {"too-long", "openai:validation", "chat-shape"}  # the problem types (or /v1 error codes) behind the accepted ST202


def _rejected_kinds(output: str) -> list[str]:
    """The problem type of each schema-valid request refused, from the printed failures."""
    kinds = []
    for block in re.split(r"\n- ST", output)[1:]:
        if block.startswith("202 "):
            found = re.search(r"urn:instructedit:problem:([a-z0-9-]+)", block)
            openai = re.search(r'"type":"invalid_request_error","param":"messages","code":"([a-z_-]+)"', block)
            if "an edit as chat is" in block:  # the order of an edit's chat turns, which the schema cannot state
                kinds.append("chat-shape")
            else:
                kinds.append(found.group(1) if found else f"openai:{openai.group(1)}" if openai else "unknown")
    return kinds


@dataclass
class FuzzResult:
    cases: int
    responses: int
    server_errors: int
    failures: list[dict] = field(default_factory=list)  # {"code", "title", "operations", "count"}
    seconds: float = 0.0
    command: str = ""

    rejected_kinds: list[str] = field(default_factory=list)  # problem types of the schema-valid requests refused (ST202)

    def unexpected(self) -> list[dict]:
        out = [{"code": "ST202", "title": f"schema-valid request refused as {kind}", "operations": [], "count": 1}
               for kind in self.rejected_kinds if kind not in ACCEPTED_REJECTIONS]  # fmt: skip
        for f in self.failures:
            ops = [op for op in f["operations"] if (f["code"], op) not in ACCEPTED]
            if ops:
                out.append({**f, "operations": ops})
        return out


def st_binary() -> str:
    here = Path(sys.executable).with_name("st")
    return str(here) if here.exists() else (shutil.which("st") or "st")


def run_fuzz(
    url: str, workdir: Path, *, max_examples: int, seed: int = 1, headers: dict | None = None, workers: int = 2, timeout: float = 900
) -> FuzzResult:
    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    args = [st_binary(), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(max_examples), "--seed", str(seed),
            "--workers", str(workers), "--report", "json,har", "--report-dir", str(workdir), "--no-color",
            "--request-timeout", "60"]  # fmt: skip
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=workdir)  # its .schemathesis cache goes there
    seconds = time.monotonic() - started
    (workdir / "output.txt").write_text(proc.stdout + proc.stderr)
    reports = glob.glob(str(workdir / "json-*.json"))
    if not reports:
        raise RuntimeError(f"schemathesis wrote no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report = json.loads(Path(reports[0]).read_text())
    if report.get("errors"):
        raise RuntimeError(f"schemathesis had errors: {report['errors']}\n{proc.stdout[-3000:]}")
    statuses = []
    for har in glob.glob(str(workdir / "har-*.json")):
        statuses += [e["response"]["status"] for e in json.loads(Path(har).read_text())["log"]["entries"]]
    failures = [
        {"code": f["code"], "title": f["title"], "operations": list(f.get("operations") or []), "count": f.get("count", 1)}
        for f in report.get("failures", [])
    ]
    command = " ".join(a if not a.startswith("Authorization") else "Authorization: Bearer <key>" for a in args)
    output = proc.stdout + proc.stderr
    return FuzzResult(
        report["test_cases"]["generated"],
        len(statuses),
        sum(s >= 500 for s in statuses),
        failures,
        seconds,
        command,
        _rejected_kinds(output),
    )
