"""service.client (sync and async) and the CLI commands on it, end to end
against a real server (uvicorn on loopback, the tiny model)."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from service.client import AsyncClient, BadRequest, Client, Conflict, NotFound, WaitTimeout
from service.commands import app

from harness import Service, make_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def service(tmp_path, components):
    with Service(make_settings(tmp_path / "store"), components) as svc:
        yield svc


class Recording(httpx.HTTPTransport):
    """The real transport, remembering each request it sent."""

    def __init__(self):
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request):
        self.sent.append(request)
        return super().handle_request(request)


def test_the_clients_edit_carries_every_field_the_api_returns():
    from service.client import Edit
    from service.schemas import EditPublic

    assert set(EditPublic.model_fields) <= set(Edit.model_fields)


def test_the_clients_metrics_take_a_score_the_server_did_not_measure():
    """An edit whose metrics were stored before a score existed (subject_mentions, session 24) is served with it null."""
    from service.client import Metrics
    from service.schemas import EditMetrics, MetricsPublic

    stored = {name: {"before": 0.0, "after": 100.0, "n": 1} for name, f in EditMetrics.model_fields.items() if f.is_required()}
    served = MetricsPublic(id="e1", ready=True, status="applied", version=1, metrics=EditMetrics(**stored)).model_dump(mode="json")
    assert served["metrics"]["subject_mentions"] is None
    got = Metrics.model_validate(served)
    assert got.metrics["subject_mentions"] is None and got.metrics["reliability"].after == 100.0


def test_sync_client(service):
    transport = Recording()
    with Client(service.url, api_key="k-123", transport=transport) as c:
        assert c.model().version == 0 and [m.id for m in c.models()] == ["tiny-llama", "tiny-llama@v0"]
        before = c.chat("Which country is the Eiffel Tower in?", max_tokens=6)
        assert before.model == "tiny-llama@v0" and before.version == 0 and before.usage.completion_tokens <= 6

        accepted = c.edit("The capital of Peru is", "Quito", rephrase_prompts=["Peru has its capital in"], idempotency_key="peru")
        assert (
            accepted.status == "queued"
            and c.edit("The capital of Peru is", "Quito", rephrase_prompts=["Peru has its capital in"], idempotency_key="peru").id
            == accepted.id
        )
        edit = c.wait(accepted.id)
        assert edit.status == "applied" and edit.version == 1 and edit.records[0]["target_new"] == "Quito"
        chat = c.wait(
            c.edit(
                messages=[{"role": "user", "content": "Which country is the Eiffel Tower in?"}, {"role": "assistant", "content": "Italy"}]
            ).id
        )
        assert chat.version == 2 and chat.records[0]["asked_as"] == "chat"
        assert [e.id for e in c.edits().items] == [chat.id, edit.id] and c.edits(status="failed").items == []
        metrics = c.metrics(edit.id, wait=30)
        assert metrics.ready and metrics.metrics["reliability"].after >= metrics.metrics["reliability"].before

        assert c.generate("The capital of Peru is", max_new_tokens=5, version=1).text.startswith("Quito")
        assert c.generate("The capital of Peru is", max_new_tokens=5, version=0).model_version == 0
        assert c.chat("Which country is the Eiffel Tower in?", max_tokens=6, version=0).text == before.text

        assert c.rollback(edit.id).id == edit.id
        gone = c.wait(edit.id, statuses=("rolled_back",))
        assert gone.rollback_version == 3 and c.model().active_edits == [chat.id]

        with pytest.raises(NotFound) as nf:
            c.get_edit("nope")
        assert nf.value.status == 404 and nf.value.type.endswith("edit-not-found") and "nope" in nf.value.detail
        with pytest.raises(BadRequest) as bad:
            c.edit("", "x")
        assert bad.value.status == 422 and bad.value.body["errors"][0]["loc"][-1] == "prompt"
        with pytest.raises(NotFound) as missing:
            c.chat("hi", version=9)
        assert missing.value.type == "model_not_found" and "version 9" in missing.value.detail
        failed = c.wait(c.edit("FAIL here", "x").id)
        with pytest.raises(Conflict):
            c.rollback(failed.id)
        with pytest.raises(WaitTimeout):
            c.wait(failed.id, timeout=0.2, statuses=("rolled_back",), poll=0.05)
    assert transport.sent and all(r.headers["authorization"] == "Bearer k-123" for r in transport.sent)


def test_async_client(service):
    async def run():
        async with AsyncClient(service.url) as c:
            accepted = await c.edit("The capital of Peru is", "Quito")
            edits = await asyncio.gather(c.wait(accepted.id), c.get_edit(accepted.id))
            assert edits[0].status == "applied" and edits[1].id == accepted.id
            newest, base = await asyncio.gather(
                c.generate("The capital of Peru is", max_new_tokens=5), c.generate("The capital of Peru is", max_new_tokens=5, version=0)
            )
            assert newest.model_version == 1 and base.model_version == 0 and newest.text.startswith("Quito")
            chat = await c.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], max_tokens=4, version=0)
            assert chat.model == "tiny-llama@v0" and (await c.model()).version == 1
            assert (await c.metrics(accepted.id, wait=30)).ready
            await c.rollback(accepted.id)
            assert (await c.wait(accepted.id, statuses=("rolled_back",))).rollback_version == 2
            with pytest.raises(NotFound):
                await c.metrics("nope")

    asyncio.run(run())


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_jsonl_of_twenty_edits(service, tmp_path):
    url = ["--url", service.url]
    rows = [{"prompt": f"Fact number {i} is", "target_new": f"value {i}"} for i in range(15)]
    rows += [
        {"messages": [{"role": "user", "content": f"What is fact {i}?"}, {"role": "assistant", "content": f"answer {i}"}]} for i in range(5)
    ]
    path = tmp_path / "edits.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    added = cli("edits", "add", "--file", str(path), *url)
    ids = [line.split("\t")[0] for line in added.splitlines()]
    assert len(ids) == 20 and all(line.endswith("\tqueued") or "\t" in line for line in added.splitlines())
    waited = cli("edits", "wait", *ids, *url).splitlines()
    assert [line.split("\t")[1] for line in waited] == ["applied"] * 20
    assert sorted(int(line.split("\t")[2][1:]) for line in waited) == list(range(1, 21))

    listed = json.loads(cli("edits", "list", "--limit", "50", "--json", *url))
    assert [e["id"] for e in listed] == ids[::-1] and {e["status"] for e in listed} == {"applied"}
    assert [e["records"][0].get("asked_as", "prompt") for e in listed[:5]] == ["chat"] * 5
    lines = cli("edits", "list", "--limit", "3", *url).splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[i, "applied"] for i in ids[:-4:-1]]
    assert lines[0].endswith("'What is fact 4?' -> 'answer 4'")

    rolled = cli("edits", "rollback", ids[3], "--wait", *url)
    assert rolled.strip() == f"{ids[3]}\trolled_back\tv21"
    shown = json.loads(cli("edits", "show", ids[3], *url))
    assert shown["status"] == "rolled_back" and shown["records"][0]["prompt"] == "Fact number 3 is"
    assert len(json.loads(cli("edits", "list", "--status", "applied", "--limit", "50", "--json", *url))) == 19
    assert "reliability" in cli("edits", "metrics", ids[0], *url)

    one = cli("edits", "add", "--prompt", "The capital of Peru is", "--target", "Quito", "--wait", *url)
    assert one.strip().endswith("\tapplied\tv22")
    chat = cli("edits", "add", "--question", "Who wrote Hamlet?", "--answer", "Marlowe", "--json", *url)
    assert json.loads(chat)[0]["status"] == "queued"

    plain = CliRunner().invoke(app, ["ask", "The capital of Peru is", "--plain", "--max-tokens", "5", "--version", "22", "--json", *url])
    direct = service.client.post("/generate", json={"prompt": "The capital of Peru is", "max_new_tokens": 5, "version": 22}).json()
    assert plain.exit_code == 0 and json.loads(plain.stdout) == direct and direct["model_version"] == 22
    base = CliRunner().invoke(app, ["ask", "The capital of Peru is", "--plain", "--max-tokens", "5", "--version", "0", "--json", *url])
    assert json.loads(base.stdout)["model_version"] == 0 and json.loads(base.stdout)["text"] != direct["text"]
    chat_answer = CliRunner().invoke(app, ["ask", "Who wrote Hamlet?", "--max-tokens", "5", "--version", "0", *url])
    assert chat_answer.exit_code == 0 and chat_answer.stderr.strip() == "(version 0)"
    info = json.loads(cli("info", *url))
    assert info["versions"][0] == "tiny-llama@v0" and len(info["versions"]) == info["version"] + 1

    unknown = CliRunner().invoke(app, ["edits", "show", "nope", *url])
    assert unknown.exit_code == 1 and "404" in unknown.output and "nope" in unknown.output
    down = CliRunner().invoke(app, ["edits", "list", "--url", "http://127.0.0.1:9"])
    assert down.exit_code == 1 and "cannot reach" in down.output


def test_console_script_reads_the_url_from_the_environment(service):
    """The real entry point in a fresh process: INSTRUCTEDIT_URL, then `ask` on version 0."""
    env = {**os.environ, "INSTRUCTEDIT_URL": service.url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "service.commands", "ask", "Hello", "--max-tokens", "3", "--version", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("(version 0)")
