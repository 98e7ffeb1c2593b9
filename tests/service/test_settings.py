"""Settings from the environment (service/settings.py) and the editor rule (service/components.py)."""

import pytest
from pydantic import ValidationError

from service.components import EditorMissing, load_components
from service.settings import Settings, shipped_editor_path


def test_environment_prefix_and_redis_url(monkeypatch):
    monkeypatch.setenv("INSTRUCTEDIT_MODEL", "tiny-gpt2")
    monkeypatch.setenv("INSTRUCTEDIT_SNAPSHOT_EVERY", "3")
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/1")
    s = Settings()
    assert s.model == "tiny-gpt2" and s.snapshot_every == 3 and s.redis_url == "redis://example:6380/1"
    assert Settings(redis_url=None).redis_url is None  # an argument beats the environment


def test_defaults():
    s = Settings()
    assert s.model == "smollm2-135m" and s.redis_url is None and s.allow_untrained_editor is False
    assert s.editor_path == shipped_editor_path()
    assert s.editor_path.parts[-3:] == ("artifacts", "smollm2-135m", "instructedit.safetensors")
    with pytest.raises(ValidationError):
        Settings(dtype="float8")


def test_missing_editor_is_an_error_unless_allowed(tmp_path):
    settings = Settings(model="tiny-llama", editor_path=tmp_path / "nope.safetensors", device="cpu")
    with pytest.raises(EditorMissing, match="ALLOW_UNTRAINED_EDITOR"):
        load_components(settings)
    components = load_components(settings.model_copy(update={"allow_untrained_editor": True}))
    assert components.trained is False and components.editor_path is None
    assert components.editor.spec.edit_params
