import os

import pytest

from service.settings import Settings

from harness import RedisServer, make_settings, tiny_components


@pytest.fixture(autouse=True)
def _no_service_env(monkeypatch):
    """Only the test's own Settings count: never a REDIS_URL (say, the shared
    Redis on 6379) or INSTRUCTEDIT_* from the environment running the tests."""
    for name in list(os.environ):
        if name == "REDIS_URL" or (name.startswith("INSTRUCTEDIT_") and name[13:].lower() in Settings.model_fields):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server for the session (tests that kill Redis start their own)."""
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def components():
    """The tiny model and a steerable untrained editor; the service never changes them."""
    return tiny_components()


@pytest.fixture(params=["embedded", "redis"])
def mode(request):
    return request.param


@pytest.fixture
def settings(mode, tmp_path, request):
    """Settings for one test: its own store (and so its own Redis keys)."""
    redis_url = request.getfixturevalue("redis_server").url if mode == "redis" else None
    return make_settings(tmp_path / "store", redis_url)

