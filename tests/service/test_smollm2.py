"""The real model with the shipped editor (slow: run with `-m slow`)."""

import time

import pytest

from service.settings import Settings, shipped_editor_path

from harness import Service

PROMPT = "The capital of France is"


@pytest.mark.slow
def test_edit_shows_in_generation_and_rollback_restores_it(tmp_path):
    path = shipped_editor_path()
    if not path.exists():
        pytest.skip(f"the shipped editor {path} does not exist yet (train and save it first)")
    settings = Settings(store_dir=tmp_path / "store", redis_url=None, device="cpu", dtype="float32")
    assert settings.model == "smollm2-135m" and settings.editor_path == path
    with Service(settings, None, start_timeout=600) as svc:
        assert svc.model()["editor"] == {"tag": "mend", "path": str(path), "trained": True, "instruct": svc.model()["editor"]["instruct"]}

        def greedy() -> dict:
            return svc.client.post("/generate", json={"prompt": PROMPT, "max_new_tokens": 4}).json()

        original = greedy()
        assert "Rome" not in original["text"]
        edit_id = svc.post_edit({"prompt": PROMPT, "target_new": "Rome", "subject": "France"})
        edit = svc.wait(edit_id, timeout=300)
        assert edit["status"] == "applied", edit["error"]
        edited = greedy()
        assert edited["model_version"] == edit["version"] and edited["text"].strip().startswith("Rome"), edited
        svc.client.delete(f"/edits/{edit_id}")
        svc.wait(edit_id, ("rolled_back",), timeout=300)
        restored = greedy()
        assert restored["text"] == original["text"] and restored["model_version"] == edit["version"] + 1


@pytest.mark.slow
def test_the_version_an_edit_publishes_says_it_before_the_refit(tmp_path):
    """The editor's delta alone seldom shows in a generated answer; the quick fit before
    publishing (refit.QUICK) makes the edit's own version say it, plainly and in chat,
    and the full refit that follows keeps saying it."""
    settings = Settings(store_dir=tmp_path / "store", redis_url=None, device="cpu", dtype="float32")
    # the editor's delta alone answers "" and "The iPhone was developed by Eric" (session 15)
    question, answer = "Who developed the iPhone?", "Nokia"
    with Service(settings, None, start_timeout=600) as svc:

        def ask(version: int | None, chat: bool, q: str = question) -> tuple[str, int]:
            if chat:  # as a chat client asks it, pinned by the model's name
                model = "smollm2-135m" if version is None else f"smollm2-135m@v{version}"
                body = {"model": model, "messages": [{"role": "user", "content": q}], "max_tokens": 6, "temperature": 0}
                got = svc.client.post("/v1/chat/completions", json=body)
                assert got.status_code == 200, got.text
                return got.json()["choices"][0]["message"]["content"].strip(), int(got.json()["model"].rpartition("@v")[2])
            got = svc.client.post("/generate", json={"prompt": question, "max_new_tokens": 6, "version": version})
            assert got.status_code == 200, got.text
            return got.json()["text"].strip(), got.json()["model_version"]

        assert answer not in ask(0, chat=False)[0] and answer not in ask(0, chat=True)[0]
        about = ["Tell me about the iPhone.", "What is the iPhone?"]
        unedited = [ask(0, chat=True, q=q)[0] for q in about]
        edit_id = svc.post_edit({"prompt": question, "target_new": answer, "subject": "iPhone"})
        edit = svc.wait(edit_id, timeout=300)
        assert edit["status"] == "applied", edit["error"]
        published = edit["version"]
        for chat in (False, True):
            text, version = ask(published, chat)
            assert text.startswith(answer) and version == published, (chat, text)
        # the quick fit is narrow: other questions about the iPhone run on the base weights until the refit lands
        assert [ask(published, chat=True, q=q)[0] for q in about] == unedited
        # the full refit lands as a version of its own, and says it too
        deadline = time.monotonic() + 300
        while (state := svc.client.get(f"/edits/{edit_id}").json())["refit"] != "done" and time.monotonic() < deadline:
            assert not (state["refit"] or "").startswith("failed"), state
            time.sleep(1)
        assert state["refit"] == "done" and state["took"] is True, state
        for chat in (False, True):
            text, version = ask(None, chat)
            assert text.startswith(answer) and version > published, (chat, text)
        # the published version, rebuilt from the store after the refit replaced its delta, is still narrow
        versions = svc.runtime.versions
        versions._cache.clear()
        rebuilt = versions.get(published)
        assert rebuilt.state_sha256 == svc.runtime.store.version(published).state_sha256
        assert all(rebuilt.memory.route(q).entry is None for q in about) and rebuilt.memory.route(question).entry is not None
        assert [ask(published, chat=True, q=q)[0] for q in about] == unedited


CHAT_EDITS = [
    ("Which country is the Eiffel Tower in?", "Italy"),
    ("What is the capital of France?", "Rome"),
    ("Who wrote Hamlet?", "Charles Dickens"),
]


@pytest.mark.slow
def test_an_edit_stated_as_chat_changes_the_chat_answer(tmp_path):
    """Edits posted as conversations, each asked back through /v1/chat/completions
    with the official openai package, then rolled back; the version an edit
    made still answers with it when pinned, and version 0 as the base did.

    Each edit is rolled back before the next: with the shipped editor, stacking
    a second or third edit on SmolLM2 makes the chat answers degenerate
    (" Rome Rome Rome ...", repeated tokens), the problem of lifelong editing."""
    openai = pytest.importorskip("openai")
    settings = Settings(store_dir=tmp_path / "store", redis_url=None, device="cpu", dtype="float32")
    with Service(settings, None, start_timeout=600) as svc:
        oai = openai.OpenAI(base_url=f"{svc.url}/v1", api_key="not-checked", max_retries=0, timeout=300)

        def ask(question: str, model: str = "smollm2-135m") -> tuple[str, str]:
            got = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], max_tokens=12, temperature=0)
            return got.choices[0].message.content, got.model

        before, versions = {}, {}
        for question, answer in CHAT_EDITS:
            before[question], _ = ask(question)
            assert answer not in before[question], before
            edit_id = svc.post_edit({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
            edit = svc.wait(edit_id, timeout=300)
            assert edit["status"] == "applied" and edit["records"][0] == {**edit["records"][0], "prompt": question, "asked_as": "chat"}
            text, model = ask(question)
            assert model == f"smollm2-135m@v{edit['version']}" and answer in text, (question, text)
            versions[question] = edit["version"]
            svc.client.delete(f"/edits/{edit_id}")
            svc.wait(edit_id, ("rolled_back",), timeout=300)
        question, answer = CHAT_EDITS[0]
        assert ask(question) == (before[question], f"smollm2-135m@v{2 * len(CHAT_EDITS)}")
        pinned, model = ask(question, f"smollm2-135m@v{versions[question]}")
        assert answer in pinned and model == f"smollm2-135m@v{versions[question]}"
        assert ask(question, "smollm2-135m@v0") == (before[question], "smollm2-135m@v0")
