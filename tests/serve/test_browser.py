"""The page of ``orchestrate serve`` in a real browser: headless Chromium (the system's, driven by Playwright) against
``orchestrate serve`` started as a process. A run is started from the page, its tasks change status live, its
review gate is checked (an edit that breaks the output schema is refused in the page) and approved from the review
queue, and the run finishes. Every wait is on a selector, never a fixed sleep.

With ``ORCHESTRATE_SCREENSHOT=1`` the test also saves the finished run's page as ``docs/serve-run.png``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:  # imported in the test, so that a missing Playwright fails that test, not the collection
    from playwright.sync_api import Browser, Playwright, Request

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("ORCHESTRATE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TOKEN = "browser-test-token-0123456789"
SCREENSHOT = REPO / "docs" / "serve-run.png"

PROJECT = """\
name: launch-brief
agents:
  sim: {type: offline, latency_ms: 700}
  slow: {type: offline, latency_ms: 1500}
  writer:
    type: offline
    latency_ms: 400
    response: '{"headline": "Otters, on time", "score": 4}'
defaults: {agent: sim, max_concurrency: 4}
tasks:
  - {id: research, agent: slow, description: "Facts about otters"}
  - {id: market, description: "The market for {{ tasks.research.output }}", depends_on: [research]}
  - {id: personas, description: "Personas from {{ tasks.research.output }}", depends_on: [research]}
  - id: draft
    agent: writer
    description: "A headline from {{ tasks.market.output }} and {{ tasks.personas.output }}"
    depends_on: [market, personas]
    output_format: json
    output_schema:
      type: object
      required: [headline, score]
      properties: {headline: {type: string}, score: {type: integer}}
    review: require_human
  - {id: email, description: "An email: {{ tasks.draft.output }}", depends_on: [draft]}
  - {id: social, description: "Posts: {{ tasks.draft.output }}", depends_on: [draft]}
"""
TASKS = ["research", "market", "personas", "draft", "email", "social"]


def launch_chromium(playwright: Playwright) -> Browser:
    """The system's Chromium, headless; the test fails (never skips) when it is not there."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it (Debian/Ubuntu: apt-get install chromium) "
            "or point ORCHESTRATE_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``orchestrate serve`` as a process on a free loopback port (``--port 0``, read from its first line), with
    the project under ``--projects``; its URL once ``/api/health`` answers."""
    projects = tmp_path / "projects"
    projects.mkdir()
    (projects / "launch.yaml").write_text(PROJECT)
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "orchestration", "serve", "--port", "0", "--store", str(tmp_path / "runs.db")]
    command += ["--projects", str(projects), "--token", TOKEN, "--log-level", "warning"]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # this checkout's package
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = wait_until_up(process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_up(process: subprocess.Popen[bytes], log: Path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"orchestrate serve exited with {process.returncode}:\n{log.read_text()}", pytrace=False)
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())
        if found:
            url = f"http://127.0.0.1:{found.group(1)}"
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    pytest.fail(f"orchestrate serve did not answer /api/health in {timeout_s} s:\n{log.read_text()}", pytrace=False)


def test_a_run_started_reviewed_and_finished_from_the_page(server: str) -> None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright: pip install playwright", pytrace=False)

    api_calls: list[Request] = []
    errors: list[str] = []

    def requested(request: Request) -> None:
        if "/api/" in request.url:
            api_calls.append(request)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 960})
            page.set_default_timeout(20_000)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", requested)

            # The token comes in the address's fragment, then leaves it.
            page.goto(f"{server}/#token={TOKEN}")
            expect(page.locator("#runs-table")).to_be_visible()
            assert TOKEN not in page.url

            # Start a run of the project under --projects.
            page.click("#nav-new")
            page.locator("#project option[value='launch.yaml']").wait_for(state="attached")
            page.select_option("#project", "launch.yaml")
            page.click("#start-run")
            page.wait_for_url(re.compile(r"#/runs/[^/]+$"))
            run_id = page.url.rsplit("/", 1)[1]

            # Its tasks change status live: graph nodes carry the task id and status.
            task = "[data-task-id={}][data-status={}]".format
            page.wait_for_selector(task("research", "running"))
            expect(page.locator(task("email", "pending"))).to_have_text(re.compile("pending"))
            page.wait_for_selector(task("research", "success"))
            page.wait_for_selector(task("draft", "waiting"))
            expect(page.locator("#run-status")).to_have_attribute("data-status", "running")

            # The review queue: an edit that breaks the task's output schema is refused before it is sent.
            page.click("#nav-reviews")
            expect(page.locator("#review-count")).to_have_text("1")
            card = page.locator(f"[data-gate='{run_id}/draft']")
            expect(card).to_contain_text("Otters, on time")
            card.locator("[data-action=edit]").click()
            expect(card.locator("textarea[name=output]")).to_have_value(re.compile("Otters, on time"))
            card.locator("textarea[name=output]").fill('{"headline": 7}')
            posted = len([r for r in api_calls if r.method == "POST"])
            card.locator("button[type=submit]").click()
            expect(card.locator(".problems")).to_contain_text('"score" is required')
            expect(card.locator(".problems")).to_contain_text("$.headline: expected string")
            assert len([r for r in api_calls if r.method == "POST"]) == posted  # nothing was sent
            card.get_by_role("button", name="Cancel").click()

            card.locator("[data-action=approve]").click()
            expect(card.locator(".form-status")).to_have_text("Recorded: approve.")

            # Back on the run: it finishes, every task succeeded, the review is recorded.
            page.goto(f"{server}/#/runs/{run_id}")
            page.wait_for_selector("#run-status[data-status=success]")
            for task_id in TASKS:
                page.wait_for_selector(task(task_id, "success"))
            page.click("[data-task-id=draft]")
            panel = page.locator("#task-panel")
            expect(panel.locator(".review-record")).to_contain_text("approve by web")
            expect(panel.locator(".output")).to_contain_text('"headline": "Otters, on time"')
            expect(page.locator("#run-counts")).to_contain_text("6 success")
            expect(page.locator("#cost-by-agent")).to_be_visible()
            if os.environ.get("ORCHESTRATE_SCREENSHOT") == "1":
                page.screenshot(path=str(SCREENSHOT), full_page=True)

            # The runs list shows it finished.
            page.click("#nav-runs")
            page.wait_for_selector(f"tr[data-run-id='{run_id}'][data-status=success]")
        finally:
            browser.close()

    assert not errors, f"the page raised: {errors}"
    # Every API call but the health check carried the token, and the run's events came from its stream.
    assert api_calls
    for request in api_calls:
        if not request.url.endswith("/api/health"):
            assert request.headers.get("authorization") == f"Bearer {TOKEN}", request.url
    assert any(request.url.endswith(f"/api/runs/{run_id}/events") for request in api_calls)
