"""The coverage map in a real browser: Debian's chromium driven by Playwright, a real `ern serve`.

A fresh PostGIS database, graphs compiled from the Monaco 2016 extract, synthetic members
loaded with `ern synth --load` as the README says, then the page as a coordinator uses it:
paste the token, see the cells, move the hour from a weekday noon to Sunday 04:00, click a
cell. `./scripts/test` installs chromium (`apt-get install chromium`) when it is missing;
Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.conftest import fresh_database  # noqa: F401  (fixture, reused)
from tests.e2e.support import ERN, Server, ern, server_env
from tests.paths import extract

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
EXTRACT = extract("monaco_2016")
WEDNESDAY_NOON = 2 * 24 + 12
SUNDAY_4AM = 6 * 24 + 4
WALK_BIKE_DRIVE = "walk,bike,drive"


@pytest.fixture(scope="session")
def monaco_graph_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """walk, bike and drive graphs of Monaco, compiled once a session with `ern graph build`."""
    out = tmp_path_factory.mktemp("monaco-graphs")
    done = subprocess.run(
        [
            *ERN,
            "graph",
            "build",
            "--source",
            str(EXTRACT),
            "--modes",
            WALK_BIKE_DRIVE,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def served_map(
    fresh_database: str,  # noqa: F811
    monaco_graph_dir: Path,
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    """(base URL, coordinator token) of a running ern with 300 synthetic members in Monaco."""
    env = server_env(fresh_database, monaco_graph_dir, tmp_path / "var")
    env["ERN_TIMEZONE"] = "Europe/Monaco"
    ern(env, "db", "upgrade")
    token = ern(env, "admin", "create-coordinator", "--handle", "map-coord").strip().split()[-1]
    server = Server(env, tmp_path / "serve.log")
    try:
        server.wait_healthy()
        done = subprocess.run(
            [
                *ERN,
                "synth",
                *("--n", "300", "--graph-dir", str(monaco_graph_dir)),
                *("--out", str(tmp_path / "members.json"), "--load", server.base, "--token", token),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        tokens = json.loads((tmp_path / "members.tokens.json").read_text())
        assert len(tokens) == 300, done.stderr[-2000:]
        yield server.base, token
    finally:
        server.stop()


def test_coordinator_reads_the_coverage_map_in_a_browser(
    served_map: tuple[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "no /usr/bin/chromium: ./scripts/test installs it (apt-get)"
    base, token = served_map
    shot = tmp_path / "map.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            # A browser in another time zone than the network's: the page must not care.
            page = browser.new_page(
                viewport={"width": 1000, "height": 780}, timezone_id="America/New_York"
            )
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            outside: list[str] = []
            asked: list[str] = []
            page.on(
                "request",
                lambda req: asked.append(req.url) if "/v1/coverage?" in req.url else None,
            )
            page.on(
                "request",
                lambda req: None if req.url.startswith(base) else outside.append(req.url),
            )
            page.goto(f"{base}/map")

            # A refused token says so and asks again; nothing of the network is drawn.
            page.fill("#token", "not-a-token")
            page.click("#login button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("refused", timeout=30_000)
            assert page.locator("path.cell").count() == 0
            assert page.evaluate("sessionStorage.length") == 0

            # The token is asked once and kept in the tab's session storage.
            page.fill("#token", token)
            page.click("#login button[type=submit]")
            mapbox = page.locator("#map")
            expect(mapbox).to_have_attribute("data-state", "ready", timeout=60_000)
            assert page.evaluate("sessionStorage.length") == 1
            expect(page.locator(".leaflet-control-attribution")).to_contain_text(
                "OpenStreetMap contributors"
            )

            # Weekday noon, then Sunday 04:00: the gaps move with where people are.
            def show(hour: int, label: str) -> int:
                page.locator("#hour").fill(str(hour))
                expect(page.locator("#hour-label")).to_have_text(label)
                expect(mapbox).to_have_attribute("data-hour", str(hour), timeout=60_000)
                expect(mapbox).to_have_attribute("data-state", "ready", timeout=60_000)
                cells = int(mapbox.get_attribute("data-cells") or 0)
                assert cells > 0 and page.locator("path.cell").count() == cells
                return int(mapbox.get_attribute("data-gap") or 0)

            noon_gaps = show(WEDNESDAY_NOON, "Wed 12:00")
            night_gaps = show(SUNDAY_4AM, "Sun 04:00")
            assert noon_gaps != night_gaps, (noon_gaps, night_gaps)
            # The slider's hour is the network's (ERN_TIMEZONE) clock, whatever the browser's.
            at = parse_qs(urlsplit(asked[-1]).query)["at"][0]
            local = datetime.fromisoformat(at).astimezone(ZoneInfo("Europe/Monaco"))
            assert (local.weekday(), local.hour, local.minute) == (6, 4, 0), at

            # The weekly profile is drawn as 7 x 24 hours, and recruitment sites are numbered.
            expect(mapbox).to_have_attribute("data-profile", "ready", timeout=60_000)
            assert page.locator("#strip td[data-hour]").count() == 168
            expect(mapbox).to_have_attribute("data-recruits", "10", timeout=60_000)
            expect(page.locator(".recruit-icon").first).to_have_text("1")

            # Clicking a cell shows its figures.
            cells = page.locator("path.cell")
            cells.nth(cells.count() // 2).click()
            figures = page.locator(".leaflet-popup .cell-figures")
            expect(figures).to_be_visible()
            h3_index = figures.locator("td[data-figure=cell]").inner_text()
            street = figures.locator("td[data-figure='street length']").inner_text()
            within = figures.locator("td[data-figure='responders within']").inner_text()
            assert len(h3_index) == 15 and street.endswith(" m") and int(street[:-2]) > 0
            assert within == "<3" or int(within) >= 3

            page.wait_for_timeout(500)  # the popup fades in
            page.screenshot(path=str(shot))
            assert not errors, errors
            assert not outside, outside  # no CDN, no tiles: everything comes from ern
        finally:
            browser.close()
    print(f"map screenshot: {shot}")
    assert shot.stat().st_size > 10_000
