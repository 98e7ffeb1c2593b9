"""The web console at /ui, driven in Debian's chromium (headless, through
Playwright) against a real uvicorn server on loopback with the tiny model and
the steerable untrained editor: ask, edit, scores, compare, history, roll back,
keyboard-only tabs, a 375 px screen and the API-key prompt.

The browser comes from the system (`apt-get install chromium`, done by
scripts/setup.sh); Playwright's own browser download is not used.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from editor_core.refit import RefitConfig

from harness import Service, make_settings, wait_until

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")

PERU = "The capital of Peru is"
KEY = "console-test-key"


class KeyGate:
    """Answers 401 problem+json to API requests without `Bearer <KEY>` while `on`.

    It stands in for the service's own API keys (issue 13, built in parallel) so
    that the page's side of the contract (401 -> ask -> keep for the tab ->
    bearer header) is tested now; /ui itself stays public, as a login page must."""

    def __init__(self, app):
        self.app, self.on = app, False

    async def __call__(self, scope, receive, send):
        if self.on and scope["type"] == "http" and not scope["path"].startswith("/ui"):
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            if auth != f"Bearer {KEY}":
                body = json.dumps(
                    {"type": "urn:test:unauthorized", "title": "Unauthorized", "status": 401, "detail": "an API key is required"}
                ).encode()
                headers = [(b"content-type", b"application/problem+json"), (b"www-authenticate", b"Bearer")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def service(tmp_path_factory, components):
    svc = Service(make_settings(tmp_path_factory.mktemp("console") / "store"), components)
    svc.gate = None
    svc.app.add_middleware(lambda app: _keep(svc, KeyGate(app)))
    with svc:
        yield svc


def _keep(svc, gate):
    svc.gate = gate
    return gate


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=20_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, service):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_console(page, service, view: str = "ask"):
    page.goto(f"{service.url}/ui/#{view}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def api_generate(service, prompt: str, **extra) -> dict:
    r = service.client.post("/generate", json={"prompt": prompt, "max_new_tokens": 5, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def ask(page, prompt: str, tokens: int = 5):
    page.get_by_role("tab", name="Ask").click()
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Max new tokens").fill(str(tokens))
    page.get_by_role("button", name="Ask the newest version").click()


def test_ask_edit_compare_and_roll_back(page, service):
    assert service.client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    open_console(page, service)
    start = service.model()["version"]
    expect(page.locator("#model-line")).to_contain_text(f"version {start}")

    # Ask: the answer names the version it came from.
    ask(page, PERU)
    expect(page.locator("#ask-answer-title")).to_have_text(f"Version {start} (newest) answers")
    before = api_generate(service, PERU)
    expect(page.locator("#ask-answer-text")).to_have_text(before["text"])

    # Edit: queued -> applied, live, then the scores drawn and the answers that changed.
    page.get_by_role("tab", name="Edit").click()
    page.get_by_label("Question or prompt").fill(PERU)
    page.get_by_label("New answer").fill("Quito")
    page.get_by_label("Rephrasings").fill("Peru has its capital in")
    page.get_by_label("Probe 1: prompt").fill("The capital of Chile is")
    page.get_by_label("Its answer").fill("Santiago")
    page.get_by_role("button", name="Submit the edit").click()
    expect(page.locator("#edit-status")).to_contain_text("applied", timeout=30_000)
    edit = service.client.get("/edits", params={"limit": 1}).json()["items"][0]
    assert edit["status"] == "applied" and edit["records"][0]["locality"] == [{"prompt": "The capital of Chile is", "answer": "Santiago"}]
    expect(page.locator("#edit-status")).to_have_text(f"Edit {edit['id'][:8]} applied: the model is now version {edit['version']}.")
    expect(page.locator('#edit-steps li[data-step="applied"]')).to_have_class("current")

    metrics = service.wait_metrics(edit["id"])["metrics"]
    bars = page.locator("#edit-bars .metric")
    expect(bars).to_have_count(len(metrics))  # every set the response has, whatever they are
    for name, score in metrics.items():
        row = page.locator(f'#edit-bars .metric[data-metric="{name}"]')
        after = (
            "n/a"
            if score["after"] is None
            else f"{score['after']:.0f}%"
            if float(score["after"]).is_integer()
            else f"{score['after']:.1f}%"
        )
        expect(row.locator(".value.after")).to_have_text(f"after {after}")
        if score["after"] is not None:
            width = row.locator(".bar.after").evaluate("b => b.style.width")
            assert abs(float(width.rstrip("%")) - score["after"]) < 1e-3

    probes = page.locator("#probe-table tr")
    expect(probes).to_have_count(3)
    edited_row = page.locator('#probe-table tr[data-kind="edited prompt"]')
    expect(edited_row).to_have_attribute("data-changed", "true")
    expect(edited_row.locator("td").nth(3)).to_contain_text("Quito")  # the step -10 editor makes the edit visible on the tiny model
    expect(page.locator('#probe-table tr[data-kind="unrelated probe"] td').nth(0)).to_have_text("The capital of Chile is")

    # Ask again: the newest version answers, and says so.
    ask(page, PERU)
    expect(page.locator("#ask-answer-title")).to_have_text(f"Version {edit['version']} (newest) answers")
    expect(page.locator("#ask-answer-text")).to_have_text(re.compile(r"^\s*Quito"))

    # Compare with the version served now: the same words, nothing marked.
    page.get_by_label("Earlier version").select_option(str(edit["version"]))
    page.get_by_role("button", name="Compare side by side").click()
    expect(page.locator("#compare-summary")).to_have_text("The two versions give the same answer.")
    assert page.locator("#compare ins, #compare del").count() == 0

    # Compare with the base: the problem+json detail while the server serves only the newest version.
    page.get_by_label("Earlier version").select_option("0")
    page.get_by_role("button", name="Compare side by side").click()
    r = service.client.post("/generate", json={"prompt": PERU, "max_new_tokens": 5, "version": 0})
    if r.status_code == 200:
        expect(page.locator("#compare-left-title")).to_have_text("Version 0 (base)")
        expect(page.locator("#compare-left")).to_have_text(r.json()["text"])
        expect(page.locator("#compare ins").first).to_be_visible()
    else:
        expect(page.locator("#compare-error")).to_have_text(
            f"Version 0 could not be asked: {r.status_code} {r.json()['title']}: {r.json()['detail']}"
        )

    # History: the edit, its scores, the versions and the model's health.
    page.get_by_role("tab", name="History").click()
    row = page.locator(f'#history-rows tr[data-edit="{edit["id"]}"]')
    expect(row.locator(".status")).to_have_text("applied")
    expect(row.locator("td").nth(2)).to_have_text(f"v{edit['version']}")
    expect(row.locator("td.scores")).to_contain_text("reliability plain:")
    expect(row.locator("td.scores")).to_contain_text("reliability (teacher-forced):")  # labelled as such
    model = service.model()
    expect(page.locator('#health dd[data-field="state_sha256"]')).to_have_text(model["state_sha256"])
    # health in words, not raw fields ("capability: null · capability pending: true")
    health = page.locator('#health dd[data-field="health"]')
    expect(health).to_contain_text("capability set: ")
    expect(health).to_contain_text(f"largest ‖ΔW‖/‖W‖ a question meets: {model['health']['max_norm_ratio']:.3f}")
    expect(health).not_to_contain_text("null")
    versions = service.client.get("/versions").json()["items"]
    assert [v["version"] for v in versions] == list(range(model["version"], -1, -1))
    for v in versions:
        expect(page.locator(f'#versions li[data-version="{v["version"]}"] .hash')).to_have_text(f"state {v['state_sha256']}")
    expect(page.locator("#versions li.current")).to_have_attribute("data-version", str(model["version"]))

    # Search is on the client: the loaded edits are filtered as one types.
    page.get_by_label("Search loaded edits").fill("peru quito")
    expect(page.locator("#history-rows tr[data-edit]")).to_have_count(1)
    page.get_by_label("Search loaded edits").fill("no such edit")
    expect(page.locator("#history-rows")).to_contain_text("No loaded edit matches")
    page.get_by_label("Search loaded edits").fill("")

    # Roll back: Cancel leaves it, the confirmation rolls it back, and the page shows the new status.
    row.get_by_role("button", name=re.compile("^Roll back edit")).click()
    expect(page.locator("#rollback-dialog")).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#rollback-dialog")).to_be_hidden()
    assert service.client.get(f"/edits/{edit['id']}").json()["status"] == "applied"
    row.get_by_role("button", name=re.compile("^Roll back edit")).click()
    page.locator("#rollback-confirm").click()
    expect(page.locator("#history-status-line")).to_contain_text(
        f"Edit {edit['id'][:8]} rolled back: the model is now version {edit['version'] + 1}."
    )
    row = page.locator(f'#history-rows tr[data-edit="{edit["id"]}"]')
    expect(row.locator(".status")).to_have_text("rolled back")
    assert service.model()["active_edits"] == [] and service.model()["version"] == edit["version"] + 1
    expect(page.locator('#health dd[data-field="version"]')).to_have_text(str(edit["version"] + 1))

    # The status filter asks the server for one status at a time.
    page.get_by_label("Status").select_option("applied")
    expect(page.locator(f'#history-rows tr[data-edit="{edit["id"]}"]')).to_have_count(0)
    page.get_by_label("Status").select_option("rolled_back")
    expect(page.locator(f'#history-rows tr[data-edit="{edit["id"]}"]')).to_have_count(1)


def test_the_status_is_live_while_the_worker_is_busy(page, service, components):
    """A gated edit holds the one worker in `running`; an edit submitted from the page meanwhile shows `queued`,
    then `applied` once the gate opens, without a reload."""
    components.editor.gate("console")
    blocker = service.post_edit({"prompt": "GATE:console The capital of Peru is", "target_new": "Lima"})
    try:
        service.wait(blocker, ("running",))
        open_console(page, service, "history")
        expect(page.locator(f'#history-rows tr[data-edit="{blocker}"] .status')).to_have_text("running")
        page.get_by_role("tab", name="Edit").click()
        page.get_by_label("Question or prompt").fill("The capital of Chile is")
        page.get_by_label("New answer").fill("Lima")
        page.get_by_role("button", name="Submit the edit").click()
        expect(page.locator("#edit-status")).to_have_text(re.compile(r"^Edit [0-9a-f]{8}: queued…$"))
        expect(page.locator('#edit-steps li[data-step="queued"]')).to_have_attribute("aria-current", "step")
        assert page.locator("#edit-status").get_attribute("aria-live") == "polite"
    finally:
        components.editor.release("console")
    expect(page.locator("#edit-status")).to_contain_text("applied: the model is now version")
    expect(page.locator('#edit-steps li[data-step="applied"]')).to_have_attribute("aria-current", "step")
    expect(page.locator("#edit-steps li.done")).to_have_count(2)
    assert service.wait(blocker)["status"] == "applied"


def test_compare_with_base_marks_the_words_that_changed(page, service):
    edit_id = service.post_edit({"prompt": "The capital of Chile is", "target_new": "Lima"})
    edit = service.wait(edit_id)
    assert edit["status"] == "applied"
    base = api_generate(service, "The capital of Chile is", version=0)
    open_console(page, service)
    page.get_by_label("Prompt", exact=True).fill("The capital of Chile is")
    page.get_by_label("Max new tokens").fill("5")
    page.get_by_label("Earlier version").select_option("0")
    page.get_by_role("button", name="Compare side by side").click()
    expect(page.locator("#compare-left-title")).to_have_text("Version 0 (base)")
    expect(page.locator("#compare-right-title")).to_have_text(f"Version {service.model()['version']} (newest)")
    expect(page.locator("#compare-left")).to_have_text(base["text"])
    newest = api_generate(service, "The capital of Chile is")
    expect(page.locator("#compare-right")).to_have_text(newest["text"])
    assert newest["text"] != base["text"], "the edit did not change the answer; nothing to mark"
    expect(page.locator("#compare-right ins").first).to_be_visible()


def test_tabs_work_from_the_keyboard_alone(page, service):
    open_console(page, service)
    for _ in range(10):  # Tab from the top of the page to the selected tab
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "tab-ask":
            break
    assert page.evaluate("document.activeElement.id") == "tab-ask"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused tab shows no focus ring"

    for key, tab in [
        ("ArrowRight", "edit"),
        ("ArrowRight", "history"),
        ("ArrowRight", "ask"),
        ("End", "history"),
        ("Home", "ask"),
        ("ArrowLeft", "history"),
    ]:
        page.keyboard.press(key)
        assert page.evaluate("document.activeElement.id") == f"tab-{tab}"
        expect(page.locator(f"#tab-{tab}")).to_have_attribute("aria-selected", "true")
        expect(page.locator(f"#panel-{tab}")).to_be_visible()
        assert page.locator('[role="tabpanel"]:not([hidden])').count() == 1
    assert page.url.endswith("#history")

    # Into the Ask view and ask a question without the mouse.
    page.keyboard.press("Home")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "ask-prompt"
    page.keyboard.type(PERU)
    page.keyboard.press("Tab")
    page.keyboard.press("Control+A")
    page.keyboard.type("3")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "ask-submit"
    page.keyboard.press("Enter")
    expect(page.locator("#ask-answer-title")).to_have_text(f"Version {service.model()['version']} (newest) answers")


def test_every_view_fits_a_375_px_screen(browser, service):
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=1)
    page = context.new_page()
    try:
        for view in ("ask", "edit", "history"):
            open_console(page, service, view)
            expect(page.locator(f"#panel-{view}")).to_be_visible()
            if view == "history":
                expect(page.locator("#versions li").first).to_be_visible()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"the {view} view scrolls sideways on a 375 px screen ({width} px wide)"
            for control in page.locator(f"#panel-{view} button:visible, #panel-{view} input:visible, #panel-{view} textarea:visible").all():
                box = control.bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= 375, f"{control} sticks out of the screen: {box}"
    finally:
        context.close()


def test_a_401_asks_for_a_key_and_keeps_it_for_the_tab(page, service):
    sent: list[str | None] = []
    page.on("request", lambda r: sent.append(r.headers.get("authorization")) if r.url.endswith("/model") else None)
    version = service.model()["version"]
    service.gate.on = True
    try:
        page.goto(f"{service.url}/ui/")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        page.get_by_role("textbox", name="API key").fill("wrong-key")
        page.keyboard.press("Enter")
        expect(page.locator("#key-text")).to_contain_text("That key was refused (an API key is required)")
        page.get_by_role("textbox", name="API key").fill(KEY)
        page.get_by_role("button", name="Use this key").click()
        expect(page.locator("#model-line")).to_contain_text(f"version {version}")
        expect(page.locator("#key-state")).to_have_text("API key set for this tab")
        assert page.evaluate(f"sessionStorage.getItem({json.dumps('instructedit.apiKey')})") == KEY
        assert page.evaluate("localStorage.length") == 0 and "console-test-key" not in page.evaluate("document.cookie")
        assert sent[-1] == f"Bearer {KEY}" and None in sent and "Bearer wrong-key" in sent
        # The key goes with every later call: asking works without another prompt.
        ask(page, PERU, tokens=3)
        expect(page.locator("#ask-answer-title")).to_contain_text("(newest) answers")
    finally:
        service.gate.on = False


# WCAG 2 contrast of every visible text against the first opaque background behind it.
CONTRAST_JS = """
() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
                                     .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = walker.nextNode()); ) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el.checkVisibility() || el.closest("[aria-hidden=true], .sr-only, button:disabled")) continue;
    const style = getComputedStyle(el);
    const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) out.push(`${el.tagName}.${el.className} "${n.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
  }
  for (const input of document.querySelectorAll("input[placeholder], textarea[placeholder]")) {
    if (!input.checkVisibility() || input.value) continue;
    const c = rgb(getComputedStyle(input, "::placeholder").color).slice(0, 3);
    const ratio = (Math.max(lum(c), lum(background(input))) + 0.05) / (Math.min(lum(c), lum(background(input))) + 0.05);
    if (ratio < 4.5) out.push(`placeholder of #${input.id}: ${ratio.toFixed(2)}`);
  }
  return out;
}
"""


def test_text_meets_wcag_aa_contrast_in_every_view(page, service):
    """Run after the main flow, so History has edits of several statuses and Edit has no result yet."""
    for view in ("ask", "edit", "history"):
        open_console(page, service, view)
        if view == "history":
            expect(page.locator("#versions li").first).to_be_visible()
            expect(page.locator("#history-rows tr[data-edit]").first).to_be_visible()
        low = page.evaluate(CONTRAST_JS)
        assert not low, f"text below WCAG AA contrast in the {view} view: {low}"


def test_the_versions_say_what_made_them(browser, tmp_path, components):
    """A refit is a version of its own; the list names it as one (it read "roll back of")."""
    with Service(make_settings(tmp_path / "store", refit=True), components) as svc:
        # the tiny model's flat logits (as in tests/service/test_routed.py)
        svc.runtime.worker.refit = RefitConfig(lr=3e-2, steps=100, rank=8, min_prob=0.006, subject_weight=1.0)
        a = svc.post_edit({"prompt": "The capital of Peru is", "target_new": "Quito"})
        svc.wait(a)
        wait_until(lambda: svc.client.get(f"/edits/{a}").json()["refit"] not in (None, "pending"), what="the refit")
        svc.client.delete(f"/edits/{a}")
        wait_until(lambda: svc.client.get(f"/edits/{a}").json()["status"] == "rolled_back", what="the roll back")
        causes = {v["version"]: v["cause"] for v in svc.client.get("/versions").json()["items"]}
        assert sorted(causes.values()) == sorted(["base", f"edit:{a}", f"refit:{a}", f"rollback:{a}"])
        page = browser.new_page()
        page.goto(f"{svc.url}/ui/#history")
        said = {"base": "the base model", "edit": f"edit {a[:8]}", "refit": f"refit of {a[:8]}", "rollback": f"roll back of {a[:8]}"}
        for version, cause in causes.items():
            expect(page.locator(f'#versions li[data-version="{version}"]')).to_contain_text(f"v{version} {said[cause.split(':')[0]]} · ")
        page.close()
