"""A real browser on the snapshot-vs-live page (issue 16, item 3).

Real processes: the simulated IOC, the monitor, daphne; headless Debian Chromium driven by
Playwright. A snapshot is captured from the monitor's cache; then, on screen: an unchanged enum
PV is equal (its label on both sides); a direct Channel Access put with caproto's own client
(not our code) turns its row out of tolerance within 3 s; paging and the "only out of
tolerance" filter work on the server's pages.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from monitor import events
from snapshots.capture import snapshot_capture
from squirrel.limits import DAPHNE_OPTIONS
from tests.capture.conftest import Proc, processes, sim_catalog, worker_env  # noqa: F401
from tests.epics import free_port
from tests.live.test_browser import CHROMIUM, ROOT, process, wait_port
from tests.processes import database_url

pytestmark = [pytest.mark.browser, pytest.mark.epics, pytest.mark.django_db(transaction=True)]

COUNT = 60  # 60 rows: page size 50 gives two pages
PREFIX = "BSL"
ENUM = 1  # sim.device_kind(1) == "binary"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


def _ca_put(name: str, value: int) -> None:
    """A put with caproto's synchronous client, as any other CA client would do it."""
    from caproto.sync import client

    client.write(name, value, notify=True, timeout=3, repeater=False)


def test_snapshot_page_enum_equal_put_turns_out_paging_and_filter(
    redis_client,
    processes,  # noqa: F811 (the imported fixture)
    monkeypatch,
):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")

    devices, env, _ = sim_catalog(processes, monkeypatch, count=COUNT, prefix=PREFIX)
    monitor = Proc(["monitor"], worker_env(SQUIRREL_MONITOR_HEARTBEAT_INTERVAL="0.5", **env))
    processes.append(monitor)
    names = [d.setpoint for d in devices if d.setpoint] + [d.readback for d in devices]
    deadline = time.monotonic() + 60
    while not all(redis_client.hmget(events.values_hash(), names)):
        assert time.monotonic() < deadline, "".join(monitor.lines[-30:])
        time.sleep(0.2)
    enum = devices[ENUM]
    assert enum.kind == "binary" and enum.setpoint
    snapshot = snapshot_capture(title="browser", description=None, use_cache=True,
                                created_by=None)  # fmt: skip

    web_env = {**os.environ, **env, "SQUIRREL_DATABASE_URL": database_url(),
               "SQUIRREL_ANONYMOUS_ACCESS": "read"}  # fmt: skip
    port = free_port()
    web_cmd = [shutil.which("daphne", path=str(ROOT / ".venv/bin")) or "daphne",
               "-b", "127.0.0.1", "-p", str(port), *DAPHNE_OPTIONS,
               "squirrel.asgi:application"]  # fmt: skip
    with process(web_cmd, web_env), playwright_api.sync_playwright() as pw:
        wait_port(port)
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/live/snapshots/{snapshot.pk}")
            row = page.locator(f'tr[data-pv="{enum.setpoint}"]')
            try:
                row.wait_for(timeout=15_000)
                # unchanged enum: equal, its label on both sides (never the index beside a label)
                page.wait_for_function(
                    "(el) => el.className === 'verdict-equal'", arg=row.element_handle(),
                    timeout=10_000,
                )  # fmt: skip
            except playwright_api.TimeoutError:
                page.screenshot(path="/tmp/squirrel-browser-snapshot.png")
                raise
            saved = row.locator("td.saved-sp").text_content()
            assert saved in ("OFF", "ON") and row.locator("td.live-sp").text_content() == saved
            assert row.locator("td.verdict").text_content() == "equal"

            # a direct CA put turns the row out of tolerance on screen within 3 s
            other = 1 if saved == "OFF" else 0
            _ca_put(enum.setpoint, other)
            put_at = time.monotonic()
            page.wait_for_function(
                "(el) => el.className === 'verdict-out-of-tolerance'",
                arg=row.element_handle(), timeout=3_000,
            )  # fmt: skip
            assert time.monotonic() - put_at <= 3.0
            assert row.locator("td.live-sp").text_content() == ("ON" if other else "OFF")
            assert row.locator("td.saved-sp").text_content() == saved

            # paging: 50 rows, then the other 10, in natural order
            page.select_option("#page-size", "50")
            page.wait_for_function(
                "() => document.querySelectorAll('#values tbody tr').length === 50"
            )
            first = page.locator("#values tbody tr").first.get_attribute("data-pv")
            assert first == f"{PREFIX}:DEV0:SP"
            assert page.locator("#values tbody tr").nth(10).get_attribute("data-pv") == (
                f"{PREFIX}:DEV10:SP"
            )
            page.click("#next")
            page.wait_for_function(
                "() => document.querySelectorAll('#values tbody tr').length === 10"
            )
            first = page.locator("#values tbody tr").first.get_attribute("data-pv")
            assert first == f"{PREFIX}:DEV50:SP"
            assert "showing 51–60 of 60" in page.locator("#summary").text_content()

            # only out of tolerance: every row shown is out, the enum among them
            page.check("#only-out")
            page.wait_for_function(
                "() => { const rows = [...document.querySelectorAll('#values tbody tr')];"
                " return rows.length > 0 && rows.every("
                "(r) => r.className === 'verdict-out-of-tolerance'); }"
            )
            shown = page.locator("#values tbody tr").evaluate_all(
                "(rows) => rows.map((r) => r.dataset.pv)"
            )
            assert enum.setpoint in shown
            summary = page.locator("#summary").text_content()
            assert f"{len(shown)} out of tolerance" in summary or len(shown) == 50, summary
        finally:
            browser.close()
