"""The real model with the shipped editor (slow: run with `-m slow`)."""

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
