"""The OpenAI-compatible routes against a real server (uvicorn on loopback),
driven by the official `openai` package: chat and completions, whole and
streamed, sync and async, pinned versions, /v1/models and bad input.

The tiny model with the step -10 editor: its answers are random text, but
greedy answers are deterministic, so a version's answer can be compared with
what that version gives when rebuilt from the store."""

import asyncio
import json
import threading

import httpx
import openai
import pytest
from test_api import rebuilt

from service.chat import render
from service.generation import Sampling, generate

from harness import Service, make_settings

NAME = "tiny-llama"
QUESTION = "Which country is the Eiffel Tower in?"
CHAT_EDIT = {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Italy"}]}


@pytest.fixture
def service(tmp_path, components):
    with Service(make_settings(tmp_path / "store"), components) as svc:
        yield svc


def client(svc: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{svc.url}/v1", api_key="not-checked", max_retries=0, timeout=60)


def ask(oai: openai.OpenAI, model: str = NAME, question: str = QUESTION, **kw):
    raw = oai.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=8, **kw
    )
    return raw.parse(), raw.headers


def expected_chat_answer(svc: Service, components, version: int, question: str = QUESTION, max_tokens: int = 8, chat: bool = True) -> str:
    """What `version` answers, computed here from the store's files: its weights rebuilt, the chat template (or
    the plain prompt), greedy."""
    rt = svc.runtime
    tree = rebuilt(rt, version).tree_for(question)
    text = render(components.tokenizer, [{"role": "user", "content": question}]) if chat else question
    ids = components.tokenizer(text, add_special_tokens=not chat)["input_ids"]
    return generate(tree, components.tokenizer, ids, Sampling(max_tokens)).text


def test_chat_before_and_after_a_chat_stated_edit(service, components):
    oai = client(service)
    before, headers = ask(oai)
    assert before.model == f"{NAME}@v0" and headers["x-model-version"] == "0"
    assert before.object == "chat.completion" and len(before.choices) == 1
    choice = before.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert choice.message.content == expected_chat_answer(service, components, 0)
    prompt_ids = components.tokenizer(render(components.tokenizer, [{"role": "user", "content": QUESTION}]), add_special_tokens=False)[
        "input_ids"
    ]
    assert before.usage.prompt_tokens == len(prompt_ids) and 1 <= before.usage.completion_tokens <= 8
    assert before.usage.total_tokens == before.usage.prompt_tokens + before.usage.completion_tokens
    assert before.system_fingerprint == service.model()["state_sha256"][:16]

    edit = service.wait(service.post_edit(CHAT_EDIT))
    assert edit["status"] == "applied" and edit["version"] == 1
    assert edit["records"][0] == {**edit["records"][0], "prompt": QUESTION, "target_new": "Italy", "asked_as": "chat"}

    after, headers = ask(oai)
    assert after.model == f"{NAME}@v1" and headers["x-model-version"] == "1"
    assert after.choices[0].message.content == expected_chat_answer(service, components, 1)
    # The edit moved the chat answer towards the new one: the tiny model's first byte is now "I" of "Italy".
    assert after.choices[0].message.content[0] == "I" != before.choices[0].message.content[0]
    pinned, headers = ask(oai, f"{NAME}@v0")
    assert pinned.model == f"{NAME}@v0" and headers["x-model-version"] == "0"
    assert pinned.choices[0].message.content == before.choices[0].message.content
    assert service.model()["version"] == 1  # asking for v0 did not disturb the newest


def test_stream_sync_and_async_end_with_done(service, components):
    oai = client(service)
    whole, _ = ask(oai)
    pieces, finishes, models = [], [], set()
    for chunk in oai.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=8, stream=True
    ):
        models.add(chunk.model)
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            finishes.append(c.finish_reason)
    assert "".join(pieces) == whole.choices[0].message.content and models == {f"{NAME}@v0"}
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])

    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{service.url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-model-version"] == "0"
        data = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    usage = json.loads(data[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] <= 4

    async def run_async():
        aoai = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key="not-checked", max_retries=0)
        got = await aoai.chat.completions.create(model=NAME, messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=8)
        stream = await aoai.completions.create(
            model=f"{NAME}@v0", prompt="The capital of France is", max_tokens=6, temperature=0, stream=True
        )
        text = "".join([c.choices[0].text async for c in stream if c.choices])
        whole = await aoai.completions.create(model=NAME, prompt="The capital of France is", max_tokens=6, temperature=0)
        await aoai.close()
        return got, text, whole

    got, streamed, whole_completion = asyncio.run(run_async())
    assert got.choices[0].message.content == whole.choices[0].message.content
    assert streamed == whole_completion.choices[0].text and whole_completion.model == f"{NAME}@v0"


def test_completions_choices_seed_stop_and_echo(service):
    oai = client(service)
    greedy = oai.completions.create(model=NAME, prompt="The capital of France is", max_tokens=10, temperature=0)
    text = greedy.choices[0].text
    assert greedy.object == "text_completion" and greedy.usage.completion_tokens <= 10
    stop = text[3:5]
    cut = oai.completions.create(model=NAME, prompt="The capital of France is", max_tokens=10, temperature=0, stop=[stop, "\x00"])
    assert cut.choices[0].text == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = oai.completions.create(model=NAME, prompt="The capital of France is", max_tokens=10, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.choices[0].text

    sampled = oai.completions.create(model=NAME, prompt=["Paris is", "Rome is"], max_tokens=6, temperature=1.0, seed=5, n=2)
    assert [c.index for c in sampled.choices] == [0, 1, 2, 3]
    again = oai.completions.create(model=NAME, prompt=["Paris is", "Rome is"], max_tokens=6, temperature=1.0, seed=5, n=2)
    assert [c.text for c in again.choices] == [c.text for c in sampled.choices]
    echoed = oai.completions.create(model=NAME, prompt="Paris is", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("Paris is")


def test_a_pinned_version_answers_as_it_did_while_others_get_the_newest(service, components):
    oai = client(service)
    v0, _ = ask(oai)
    for word in ("Italy", "Spain"):
        service.wait(service.post_edit({"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": word}]}))
    assert service.model()["version"] == 2
    results: dict[str, list] = {"old": [], "new": []}

    def keep_asking(kind: str, model: str):
        with client(service) as mine:
            for _ in range(3):
                results[kind].append(ask(mine, model)[0])

    threads = [threading.Thread(target=keep_asking, args=("old", f"{NAME}@v0")), threading.Thread(target=keep_asking, args=("new", NAME))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r.model for r in results["old"]] == [f"{NAME}@v0"] * 3 and [r.model for r in results["new"]] == [f"{NAME}@v2"] * 3
    assert {r.choices[0].message.content for r in results["old"]} == {v0.choices[0].message.content}
    assert {r.choices[0].message.content for r in results["new"]} == {expected_chat_answer(service, components, 2)}
    rt = service.runtime
    assert rt.state.current().version == 2 and rt.versions.rebuilds == 0  # v0 was kept from when it was served
    # /generate takes a version too; a side-by-side comparison is one request each. v1 was never
    # served to anyone: it is rebuilt from the store once.
    side = [service.client.post("/generate", json={"prompt": QUESTION, "max_new_tokens": 4, "version": v}) for v in (0, 1, 2, 1)]
    assert [r.json()["model_version"] for r in side] == [0, 1, 2, 1] and [r.headers["x-model-version"] for r in side] == [
        "0",
        "1",
        "2",
        "1",
    ]
    assert [r.json()["text"] for r in side] == [
        expected_chat_answer(service, components, v, max_tokens=4, chat=False) for v in (0, 1, 2, 1)
    ]
    assert side[1].json()["text"][0] == "I" and side[0].json()["text"] != side[1].json()["text"]
    assert rt.versions.rebuilds == 1 and rt.state.current().version == 2


def test_the_version_cache_is_bounded(tmp_path, components):
    with Service(make_settings(tmp_path / "store", version_cache_size=1), components) as svc:
        for word in ("Italy", "Spain"):
            svc.wait(svc.post_edit({"prompt": QUESTION, "target_new": word}))
        versions = svc.runtime.versions

        def at(version):
            return svc.client.post("/generate", json={"prompt": QUESTION, "max_new_tokens": 4, "version": version}).json()["text"]

        first = at(0)
        assert versions.rebuilds == 1 and versions.cached() == [0]
        assert at(0) == first and versions.rebuilds == 1
        at(1)
        assert versions.rebuilds == 2 and versions.cached() == [1]
        assert at(0) == first and versions.rebuilds == 3  # evicted, rebuilt, same answer
        at(None)
        assert versions.cached() == [2] and versions.rebuilds == 3 and svc.model()["version"] == 2


def test_models_list_every_version(service):
    oai = client(service)
    assert [m.id for m in oai.models.list()] == [NAME, f"{NAME}@v0"]
    edit_id = service.post_edit(CHAT_EDIT)
    service.wait(edit_id)
    service.client.delete(f"/edits/{edit_id}")
    service.wait(edit_id, ("rolled_back",))
    models = oai.models.list().data
    assert [m.id for m in models] == [NAME, f"{NAME}@v0", f"{NAME}@v1", f"{NAME}@v2"]
    newest = oai.models.retrieve(NAME)
    assert newest.id == NAME and newest.model_extra["version"] == 2 and newest.model_extra["active_edits"] == 0
    assert oai.models.retrieve(f"{NAME}@v1").model_extra["active_edits"] == 1
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve(f"{NAME}@v9")


BAD_CHATS = [
    ({"model": "gpt-4o"}, 404, "model", "model_not_found"),
    ({"model": f"{NAME}@v7"}, 404, "model", "model_not_found"),
    ({"model": f"{NAME}@latest"}, 404, "model", "model_not_found"),
    ({"messages": []}, 400, "messages", "validation"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role", "validation"),
    ({"messages": [{"role": "system", "content": "Be brief."}]}, 400, "messages", "validation"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, None, "validation"),
    ({"max_tokens": -1}, 400, "max_tokens", "validation"),
    ({"max_tokens": 10_000}, 400, "max_tokens", "max_tokens"),
    ({"temperature": 9}, 400, "temperature", "validation"),
    ({"n": 0}, 400, "n", "validation"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "validation"),
    ({"tools": [{"type": "function"}]}, 400, "tools", "validation"),
    ({"presence_penalty": 0.5}, 400, "presence_penalty", "validation"),
]


@pytest.mark.parametrize("change,status,param,code", BAD_CHATS)
def test_bad_chat_requests_get_openai_errors(service, change, status, param, code):
    body = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **change}
    r = service.client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error" and error["code"] == code
    assert param is None or (error["param"] or "").startswith(param), error


def test_bad_input_through_the_sdk_and_elsewhere(service):
    oai = client(service)
    with pytest.raises(openai.NotFoundError) as nf:
        oai.chat.completions.create(model=f"{NAME}@v3", messages=[{"role": "user", "content": "hi"}])
    assert "version 3" in nf.value.message and nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.completions.create(model=NAME, prompt="hi", max_tokens=-5)
    assert bad.value.param == "max_tokens"
    for path, body in [
        ("/v1/completions", {"model": NAME, "prompt": ""}),
        ("/v1/completions", {"model": NAME}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ]:
        r = service.client.post(path, json=body)
        assert r.status_code == 400 and "error" in r.json(), r.text
    r = service.client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = service.client.get("/v1/embeddings")
    assert r.status_code == 404 and r.json()["error"]["message"]
    # Edits stated as chat: a shape other than [system...], user, assistant is a 422 problem, and nothing is stored.
    for messages in (
        [{"role": "user", "content": "Q?"}],
        [{"role": "assistant", "content": "A"}, {"role": "user", "content": "Q?"}],
        [{"role": "user", "content": " "}, {"role": "assistant", "content": "A"}],
        [{"role": "tool", "content": "x"}, *CHAT_EDIT["messages"]],
    ):
        r = service.client.post("/edits", json={"messages": messages})
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text
    assert service.client.get("/edits").json()["items"] == []
    missing = service.client.post("/generate", json={"prompt": "hi", "version": 5})
    assert missing.status_code == 404 and missing.json()["newest_version"] == 0
