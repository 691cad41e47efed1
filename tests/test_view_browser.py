"""The ``--html`` page of the demo's trails in a real headless browser (Debian's Chromium driven by Playwright):
it loads without console errors or network requests, its bars are laid out in time order, expanding a row shows its
body, the search box filters, a planted script never runs, and a screenshot shows the waterfall.

Marked ``service``: skipped on a machine without Chromium or Playwright, a failure in CI (see conftest).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gotrails_otel.integrity import is_checkpoint

from .viewer_data import HOSTILE, hostile_trail, junk_lines

pytestmark = pytest.mark.service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _gotrails() -> list[str]:
    script = shutil.which("gotrails-otel")
    return [script] if script else [sys.executable, "-m", "gotrails_otel.cli"]


@pytest.fixture(scope="module")
def demo_trails(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The lines ``gotrails-otel demo`` writes (a real service, real gateway, gRPC, SQLite, Kafka, Redis)."""
    folder = tmp_path_factory.mktemp("demo")
    output = folder / "trails.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GOTRAILS_"))}
    result = subprocess.run(
        [*_gotrails(), "demo", "--output", str(output)], capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in output.read_bytes().splitlines() if not is_checkpoint(orjson.loads(line))]
    assert len(lines) >= 4
    return lines  # the trails, without the hash chain's checkpoints


@pytest.fixture(scope="module")
def page_file(demo_trails: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("page")
    payment = next(orjson.loads(line) for line in demo_trails if b'"status":201' in line and b"/v1/payments" in line)
    hostile = orjson.dumps(hostile_trail(payment))
    source = folder / "trails.jsonl"
    source.write_bytes(b"\n".join([*demo_trails, junk_lines()[2], hostile]) + b"\n")
    out = folder / "trails.html"
    result = subprocess.run(
        [*_gotrails(), "view", str(source), "--html", str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "a checkpoint record" in result.stderr
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A browser page on the HTML file, recording console errors, page errors, dialogs and network requests."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("dialog", self._dialog)
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_load_state("load")

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser: Any, page_file: Path) -> Iterator[Page]:
    opened = Page(browser, page_file)
    yield opened
    opened.close()


def _trail_section(page: Page, trace_id: str, entry: str) -> Any:
    sections = page.page.locator("section.trail").filter(has_text=trace_id).filter(has_text=entry)
    assert sections.count() >= 1
    return sections.first


def test_page_loads_without_errors_requests_or_running_planted_script(page: Page, demo_trails: list[bytes]) -> None:
    assert page.errors == []
    assert page.requests == [page.url]  # the page itself, nothing else
    assert page.dialogs == []
    assert page.page.evaluate("typeof window.__pwned") == "undefined"
    assert page.page.locator("section.trail").count() == len(demo_trails) + 1
    assert page.page.locator("#count").inner_text() == f"{len(demo_trails) + 1} of {len(demo_trails) + 1} trails"


def test_bars_are_laid_out_in_time_order(page: Page, demo_trails: list[bytes]) -> None:
    payment = next(orjson.loads(line) for line in demo_trails if b'"status":201' in line and b"/v1/payments" in line)
    section = _trail_section(page, payment["trace_id"], "POST /v1/payments")
    rows = section.locator("details.row")
    expected = 1 + len(payment["internal_steps"]) + len(payment["integrations"])
    assert rows.count() == expected >= 7
    track = rows.nth(0).locator(".track").bounding_box()
    axis = max(
        payment["latency_ms"],
        *(e["start_offset_ms"] + e["latency_ms"] for e in payment["internal_steps"] + payment["integrations"]),
    )
    placed = []
    for index in range(expected):
        row = rows.nth(index)
        start = float(row.get_attribute("data-start-ms"))
        latency = float(row.get_attribute("data-latency-ms"))
        bar = row.locator(".bar").bounding_box()
        assert bar is not None and bar["width"] >= 1.5
        assert abs(bar["x"] - (track["x"] + track["width"] * start / axis)) <= 2  # placed at its offset
        if latency / axis * track["width"] > 2:
            assert abs(bar["width"] - track["width"] * latency / axis) <= 2  # as long as it took
        assert bar["x"] + bar["width"] <= track["x"] + track["width"] + 0.5
        placed.append((start, bar["x"]))
    assert placed[0] == (0.0, track["x"])
    starts = [start for start, _ in placed]
    assert starts == sorted(starts)  # rows in start order (the trail's own order is start order too)
    assert [x for _, x in placed] == sorted(x for _, x in placed)  # later starts are drawn further right
    names = [rows.nth(i).locator(".name").inner_text() for i in range(expected)]
    assert names[1:3] == ["ValidateRequest", "CreatePaymentUsecase"]


def test_expanding_a_row_shows_its_request_and_response_bodies(page: Page, demo_trails: list[bytes]) -> None:
    payment = next(orjson.loads(line) for line in demo_trails if b'"status":201' in line and b"/v1/payments" in line)
    section = _trail_section(page, payment["trace_id"], "POST /v1/payments")
    row = section.locator("details.row").filter(has=page.page.locator(".name", has_text="midtrans.charge"))
    body = row.locator('pre.body[data-part="request"]')
    assert not body.is_visible()
    row.locator("summary").click()
    assert body.is_visible()
    assert '"gross_amount"' in body.inner_text() and '"order_id"' in body.inner_text()
    response = row.locator('pre.body[data-part="response"]')
    assert response.is_visible() and '"transaction_id": "trx-456"' in response.inner_text()
    row.locator("summary").click()
    assert not body.is_visible()


def test_search_box_filters_trails(page: Page, demo_trails: list[bytes]) -> None:
    total = len(demo_trails) + 1
    flow = [line for line in demo_trails if b"checkout-flow-0001" in line]
    page.page.fill("#search", "checkout-flow-0001")
    assert page.page.locator("section.trail:visible").count() == len(flow) >= 1
    assert page.page.locator("#count").inner_text() == f"{len(flow)} of {total} trails"
    page.page.fill("#search", "acquirer unavailable")  # text inside a response body
    assert page.page.locator("section.trail:visible").count() == 1
    page.page.fill("#search", "")
    assert page.page.locator("section.trail:visible").count() == total
    assert page.errors == []


def test_planted_script_is_shown_as_text(page: Page) -> None:
    section = _trail_section(page, "hostile-trail-0001", "POST /v1/payments")
    section.locator("details.row").first.locator("summary").click()
    as_json = orjson.dumps(HOSTILE).decode()  # the body is shown as JSON: quotes escaped, nothing else changed
    assert as_json in section.locator('pre.body[data-part="request"]').first.inner_text()
    assert HOSTILE in section.locator(".errors").inner_text()
    page.page.click("#expand")  # every row open: nothing planted runs either
    assert page.dialogs == [] and page.errors == []
    assert page.page.evaluate("typeof window.__pwned") == "undefined"
    assert page.page.locator("img, iframe, object, embed").count() == 0


def test_screenshot_shows_the_waterfall(page: Page, tmp_path: Path) -> None:
    from PIL import Image

    shot = page.page.screenshot(full_page=False)
    (tmp_path / "trails.png").write_bytes(shot)
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    assert image.size == (1280, 900)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # text, bars and badges, not a blank page
    background = max(colours)[1]
    busy = sum(count for count, colour in colours if colour != background)
    assert busy > image.size[0] * image.size[1] * 0.03
    step_colour = (0x0F, 0x8F, 0xA3)  # the step bars, light theme
    step_pixels = sum(count for count, colour in colours if _near(colour, step_colour))
    assert step_pixels > 100


def _near(colour: tuple[int, int, int], target: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, target, strict=True))
