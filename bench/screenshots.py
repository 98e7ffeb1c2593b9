"""Screenshots of the web console on the real default model (SmolLM2-135M with the
shipped editor), as a user would get them: `instructedit serve` on a free
loopback port with a fresh store, Debian's chromium driven by Playwright.

    python bench/screenshots.py                 # writes docs/figures/ui-*.png
    python bench/screenshots.py --out /tmp/ui   # elsewhere

Views: Ask (after an edit, with the comparison against the base when the server
can answer for an earlier version), Edit (status, scores, answers before and
after), History (edits, a roll back, versions, the model), and the History view on a
375 px screen. Needs the model converted once (`instructedit models pull smollm2-135m`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
EDIT = {
    "prompt": "The Eiffel Tower is located in the city of",
    "target": "Rome",
    "subject": "Eiffel Tower",
    "rephrase": "The city where the Eiffel Tower stands is",
    "probes": [("The capital of Japan is", "Tokyo"), ("The Great Wall is located in", "")],
}
SECOND = {"prompt": "The Mona Lisa was painted by", "target_new": "Pablo Picasso"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(store: Path, port: int, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("INSTRUCTEDIT_")}
    env.update(INSTRUCTEDIT_DEVICE="cpu", INSTRUCTEDIT_DTYPE="float32", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "service.commands", "serve", "--port", str(port), "--store", str(store)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the service did not become ready in 10 minutes")


def shoot(page, path: Path) -> None:
    page.wait_for_timeout(300)  # let the last paint settle
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def run(url: str, out: Path) -> None:
    client = httpx.Client(base_url=url, timeout=600)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
        expect.set_options(timeout=600_000)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{url}/ui/#edit")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")

        # Edit: submit, watch it apply, wait for the scores and the answers before/after.
        page.get_by_label("Question or prompt").fill(EDIT["prompt"])
        page.get_by_label("New answer").fill(EDIT["target"])
        page.get_by_label("Subject").fill(EDIT["subject"])
        page.get_by_label("Rephrasings").fill(EDIT["rephrase"])
        for i, (prompt, answer) in enumerate(EDIT["probes"], start=1):
            if i > 1:
                page.get_by_role("button", name="Add a probe").click()
            page.get_by_label(f"Probe {i}: prompt").fill(prompt)
            page.locator(f"#probe-{i}-answer").fill(answer)
        started = time.perf_counter()
        page.get_by_role("button", name="Submit the edit").click()
        expect(page.locator("#edit-status")).to_contain_text("applied")
        applied = time.perf_counter() - started
        expect(page.locator("#edit-bars .metric").first).to_be_visible()
        expect(page.locator("#probe-table tr").first).to_be_visible()
        print(f"edit applied {applied:.1f} s after the click (including the answers asked before it)")
        shoot(page, out / "ui-edit.png")

        # Ask: the newest version answers; compare with the base when the server can answer for it.
        page.get_by_role("tab", name="Ask").click()
        page.get_by_label("Prompt", exact=True).fill(EDIT["prompt"])
        page.get_by_label("Max new tokens").fill("16")
        page.get_by_role("button", name="Ask the newest version").click()
        expect(page.locator("#ask-answer")).to_be_visible()
        base_ok = client.post("/generate", json={"prompt": EDIT["prompt"], "max_new_tokens": 1, "version": 0}).status_code == 200
        if base_ok:
            page.get_by_label("Earlier version").select_option("0")
            page.get_by_role("button", name="Compare side by side").click()
            expect(page.locator("#compare")).to_be_visible()
        else:
            print("this server answers only for the newest version: the Ask screenshot has no side-by-side comparison")
        shoot(page, out / "ui-ask.png")

        # History: a second edit, rolled back from the page after the confirmation.
        second = client.post("/edits", json=SECOND).json()["id"]
        while client.get(f"/edits/{second}").json()["status"] not in ("applied", "failed"):
            time.sleep(0.5)
        while (m := client.get(f"/edits/{second}/metrics")).status_code == 202:
            time.sleep(0.5)
        print(f"second edit {SECOND}: {m.json().get('metrics')}")
        page.get_by_role("tab", name="History").click()
        row = page.locator(f'#history-rows tr[data-edit="{second}"]')
        row.get_by_role("button", name="Roll back edit").click()
        page.locator("#rollback-confirm").click()
        expect(row.locator(".status")).to_have_text("rolled back")
        expect(page.locator("#history-rows td.scores ul")).to_have_count(2)
        shoot(page, out / "ui-history.png")

        # A narrow screen: the History view as a phone shows it.
        narrow = browser.new_page(viewport={"width": 375, "height": 812})
        narrow.goto(f"{url}/ui/#history")
        expect(narrow.locator("#versions li").first).to_be_visible()
        expect(narrow.locator("#history-rows td.scores ul")).to_have_count(2)  # both edits' scores loaded
        narrow.screenshot(path=str(out / "ui-narrow.png"), full_page=False)
        print(f"wrote {out / 'ui-narrow.png'}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-shots-") as tmp:
        log = open(Path(tmp) / "service.log", "w")
        proc = start_service(Path(tmp) / "store", free_port(), log)
        try:
            run(f"http://127.0.0.1:{proc.args[proc.args.index('--port') + 1]}", args.out.resolve())
        finally:
            proc.terminate()
            proc.wait(60)
            log.close()


if __name__ == "__main__":
    main()
