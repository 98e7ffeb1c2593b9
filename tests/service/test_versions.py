"""GET /versions (the timeline the console draws) and the console's static files."""

import pytest

from harness import Service, make_settings

PROBLEM = "application/problem+json"


@pytest.fixture
def service(tmp_path, components):
    with Service(make_settings(tmp_path / "store"), components) as svc:
        yield svc


def test_versions_list_each_version_newest_first_with_paging(service):
    first = service.post_edit({"prompt": "The capital of Peru is", "target_new": "Quito"})
    service.wait(first)
    second = service.post_edit({"prompt": "The capital of Chile is", "target_new": "Lima"})
    service.wait(second)
    service.client.delete(f"/edits/{first}")
    service.wait(first, ("rolled_back",))

    page = service.client.get("/versions", params={"limit": 2}).json()
    assert [v["version"] for v in page["items"]] == [3, 2] and page["next_cursor"] == 2
    rest = service.client.get("/versions", params={"limit": 2, "before": page["next_cursor"]}).json()
    assert [v["version"] for v in rest["items"]] == [1, 0] and rest["next_cursor"] is None

    by_version = {v["version"]: v for v in page["items"] + rest["items"]}
    assert [by_version[v]["cause"] for v in range(4)] == ["base", f"edit:{first}", f"edit:{second}", f"rollback:{first}"]
    assert [by_version[v]["active_count"] for v in range(4)] == [0, 1, 2, 1]
    model = service.model()
    assert by_version[3]["state_sha256"] == model["state_sha256"] and by_version[3]["version"] == model["version"]
    assert by_version[0]["created_at"] <= by_version[1]["created_at"] <= by_version[3]["created_at"]

    for bad in ({"limit": 0}, {"limit": 101}, {"before": -1}, {"before": "x"}):
        r = service.client.get("/versions", params=bad)
        assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), (bad, r.text)


def test_the_console_is_served_from_the_package(service):
    r = service.client.get("/ui", follow_redirects=False)
    assert r.status_code in (301, 302, 307) and r.headers["location"] == "/ui/"
    page = service.client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and 'src="app.js"' in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = service.client.get(f"/ui/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    missing = service.client.get("/ui/nothing.js")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(PROBLEM)
    assert "/ui" not in service.client.get("/openapi.json").json()["paths"]
