"""NNI's dashboard works on a machine without internet, in a real browser (strategies/launch/dashboard_assets.js).

The bundle names a CDN for Fluent UI's icon fonts; the manager's own port answers with that URL rewritten and serves
the fonts that `make install` fetched (npm: @fluentui/font-icons-mdl2). Checked on a stub Node server (every rule,
fast), then on the real manager: its files over HTTP, then Debian's headless Chromium (installed by `make browser`)
driven by Playwright through the token login, the overview and the trial table, with every request on 127.0.0.1
(one test: a second manager would cost another 20 s; without Chromium it skips after the HTTP half).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import worker_port
from strategies.launch import create_experiment, nnictl, stop_experiment, wait_for_experiment
from strategies.launch.rest import experiment_status
from test_access_guard import NODE, TOKEN, fetch
from test_launcher import fixture_experiment

LAUNCH = Path(nnictl.ACCESS_GUARD).parent
FONTS = LAUNCH / "dashboard_fonts"
ICON_FONT = "fabric-icons-a13498cf.woff"  # the first of the bundle's icon fonts (arrows, chevrons, search)
CHROMIUM = Path("/usr/bin/chromium")
# What works on a closed network: without the background-networking switches Chromium keeps calling Google's hosts.
# (Playwright's launch() adds a fresh temporary --user-data-dir of its own.)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the `test` extra not installed
    sync_playwright = None

# NNI's bundle as it ships, in miniature: the icons' base and the web fonts' base (…/assets) as they appear in it.
BUNDLE = ('var tt="https://res.cdn.office.net/files/fabric-cdn-prod_20230307.001";var x=tt+"/assets/icons/";'
          'var f=null!==t?t:"https://res-1.cdn.office.net/files/fabric-cdn-prod_20221209.001/assets";')


# --- the rules on a stub server: a fake NNI static folder and fonts folder -----------------------------------


@pytest.fixture
def stub_with_assets(tmp_path):
    """A Node server under the guard, whose working directory holds a `static` folder as NNI's does, and whose
    guard sits beside a fonts folder with one fake font (a copy of the two modules, so the real folder is unused)."""
    launch = tmp_path / "launch"
    (launch / "dashboard_fonts").mkdir(parents=True)
    for name in ("access_guard.js", "dashboard_assets.js"):
        shutil.copy(LAUNCH / name, launch / name)
    (launch / "dashboard_fonts" / ICON_FONT).write_bytes(b"wOFF fake font")
    static = tmp_path / "nni_node" / "static"
    (static / "static" / "js").mkdir(parents=True)
    (static / "static" / "js" / "964.abc.js").write_text(BUNDLE)
    (static / "static" / "js" / "964.abc.js.map").write_text('{"sourcesContent": ["' + BUNDLE.replace('"', "'") + '"]}')
    (static / "static" / "js" / "main.abc.js").write_text("var plain = 1;")
    (tmp_path / "nni_node" / "outside.js").write_text(BUNDLE)
    script = tmp_path / "stub.js"
    script.write_text("""
const http = require('http');
const port = Number(process.argv[process.argv.indexOf('--port') + 1]);
const server = http.createServer((req, res) => res.end(`handled ${req.method} ${req.url}`));
server.listen(port, '127.0.0.1', () => console.log('ready'));
""")
    port = nnictl.free_port(worker_port(18680))
    env = nnictl.manager_environment("127.0.0.1", TOKEN)
    env["NODE_OPTIONS"] = f"--require {launch / 'access_guard.js'}"
    process = subprocess.Popen([str(NODE), str(script), "--port", str(port), "--experiment-id", "stub"], env=env,
                               cwd=tmp_path / "nni_node", stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        yield port, launch / "dashboard_fonts"
    finally:
        process.kill()
        process.wait()


def test_files_naming_the_cdn_are_served_with_local_urls_and_others_are_nnis(stub_with_assets):
    port, _ = stub_with_assets
    auth = {"Authorization": f"token {TOKEN}"}
    status, headers, body = fetch(port, "/static/js/964.abc.js", **auth)
    assert status == 200 and headers["Content-Type"].startswith("application/javascript")
    assert "cdn.office.net" not in body
    # Icons from this port; no web-font base at all: Fluent then registers no Segoe UI face and asks no one.
    assert 'tt="/resnas-assets";' in body and 'var f=null!==t?t:"";' in body
    status, _, body = fetch(port, "/static/js/964.abc.js.map", **auth)
    assert status == 200 and "cdn.office.net" not in body and "/resnas-assets" in body
    assert fetch(port, "/static/js/main.abc.js", **auth)[2] == "handled GET /static/js/main.abc.js"  # NNI's own
    assert fetch(port, "/static/js/964.abc.js")[0] == 403  # the token rule comes first
    status, headers, body = fetch(port, "/static/js/964.abc.js", method="HEAD", **auth)
    assert status == 200 and body == "" and int(headers["Content-Length"]) > len("/resnas-assets")
    assert fetch(port, "/static/js/964.abc.js", If_None_Match=headers["ETag"], **auth)[0] == 304  # the browser's copy
    # Nothing outside NNI's static folder is read, however the path is spelled: NNI answers (and refuses) those.
    for path in ("/static/..%2F..%2Foutside.js", "/static/js/%2e%2e/%2e%2e/%2e%2e/outside.js", "/../outside.js"):
        status, _, body = fetch(port, path, **auth)
        assert body.startswith("handled GET") and "cdn.office.net" not in body, path


def test_icon_fonts_come_from_the_fonts_folder_behind_the_token(stub_with_assets):
    port, fonts = stub_with_assets
    auth = {"Authorization": f"token {TOKEN}"}
    status, headers, body = fetch(port, f"/resnas-assets/assets/icons/{ICON_FONT}", **auth)
    assert status == 200 and headers["Content-Type"] == "font/woff" and body == "wOFF fake font"
    assert "immutable" in headers["Cache-Control"]  # the name carries the font's hash
    assert fetch(port, f"/resnas-assets/assets/icons/{ICON_FONT}")[0] == 403
    # A font the install did not fetch: one sentence naming the fix.
    status, _, body = fetch(port, "/resnas-assets/assets/icons/fabric-icons-3-089e217a.woff", **auth)
    assert status == 404 and "run `make install`" in body and len(body.splitlines()) == 1
    (fonts / ICON_FONT).unlink()
    assert fetch(port, f"/resnas-assets/assets/icons/{ICON_FONT}", **auth)[0] == 404
    # Only icon fonts by their published names: no Segoe UI, no other file of the folder.
    for path in ("/resnas-assets/assets/fonts/segoeui-westeuropean/segoeui-regular.woff2", "/resnas-assets/",
                 "/resnas-assets/assets/icons/..%2F..%2Faccess_guard.js", "/resnas-assets/assets/icons/.gitignore"):
        status, _, body = fetch(port, path, **auth)
        assert status == 404 and "access_guard" not in body, path
    assert fetch(port, f"/resnas-assets/assets/icons/{ICON_FONT}", method="POST", **auth)[2].startswith("handled POST")


# --- the real manager, and a real browser -------------------------------------------------------------------


def browser_missing() -> str | None:
    """Why the browser half cannot run here, or None."""
    if not CHROMIUM.exists():
        return "needs Debian's chromium (`make browser` installs it as root)"
    if sync_playwright is None:
        return "needs playwright (the `test` extra: `make install`)"
    return None


def check_the_served_bundle(handle) -> None:
    """NNI's scripts as the manager serves them name no CDN, and the icon font is there behind the token."""
    auth = {"Authorization": f"token {handle.token}"}
    status, _, page = fetch(handle.port, "/", **auth)
    scripts = re.findall(r'<script[^>]* src="\.?/?(static/js/[^"]+\.js)"', page)
    assert status == 200 and any(name.startswith("static/js/964.") for name in scripts), scripts
    bundle = ""
    for name in scripts:
        status, _, body = fetch(handle.port, f"/{name}", **auth)
        assert status == 200 and "cdn.office.net" not in body, name
        bundle += body
    assert '"/resnas-assets"' in bundle
    assert fetch(handle.port, f"/resnas-assets/assets/icons/{ICON_FONT}")[0] == 403  # same token rule as the rest
    if not (FONTS / ICON_FONT).is_file():
        pytest.skip(f"the bundle names no CDN; the icon fonts are not installed in {FONTS} (`make install` fetches "
                    f"them with npm), so the rest is not checked")
    status, headers, _ = fetch(handle.port, f"/resnas-assets/assets/icons/{ICON_FONT}", method="HEAD", **auth)
    assert status == 200 and headers["Content-Type"] == "font/woff"
    assert int(headers["Content-Length"]) == (FONTS / ICON_FONT).stat().st_size


def blue_pixels(page, selector: str) -> int:
    """Pixels of the chart's series colour (ECharts' first series is blue) on the canvas under `selector`."""
    return page.evaluate("""selector => {
        const canvas = document.querySelector(selector);
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            if (pixels[i + 3] > 128 && pixels[i + 2] > pixels[i] + 60 && pixels[i + 2] > pixels[i + 1] + 40) count++;
        }
        return count;
    }""", selector)


@pytest.mark.e2e
def test_the_dashboard_needs_no_internet_and_a_browser_logs_in_with_the_printed_url(tmp_path):
    # The launcher fixture's experiment, one trial: two intermediate results, `default` 0.25.
    handle = create_experiment(fixture_experiment(tmp_path, maxTrialNumber=1), port=worker_port(8850))
    try:
        wait_for_experiment(handle, poll_seconds=0.5, timeout=60)  # may return NO_MORE_TRIAL a moment before DONE
        deadline = time.monotonic() + 10
        while experiment_status(handle) != "DONE" and time.monotonic() < deadline:
            time.sleep(0.2)
        check_the_served_bundle(handle)
        if browser_missing():
            pytest.skip(f"the bundle and fonts were checked over HTTP; the browser half {browser_missing()}")
        browse_the_dashboard(handle, tmp_path)
    finally:
        stop_experiment(handle)


def browse_the_dashboard(handle, tmp_path) -> None:
    """Debian's headless Chromium: the printed URL, the overview, the trial table and chart, icons, a stranger."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            owner = browser.new_context(viewport={"width": 1400, "height": 900})
            requests, responses = [], []
            owner.on("request", lambda request: requests.append(request.url))
            owner.on("response", lambda response: responses.append((response.status, response.url)))
            page = owner.new_page()
            page.goto(handle.dashboard_url)
            page.wait_for_url(f"{handle.url}/oview")  # the token left the address bar (a cookie now)
            page.locator(".nav-main .title", has_text="Overview").wait_for()
            page.get_by_text("DONE", exact=True).first.wait_for()
            fonts_loaded = page.evaluate("""async () => {
                await document.fonts.ready;
                return [...document.fonts].filter(f => f.family.includes('FabricMDL2Icons') && f.status === 'loaded')
                    .map(f => f.family);
            }""")
            assert "FabricMDL2Icons" in [family.strip("'\"") for family in fonts_loaded]
            page.screenshot(path=tmp_path / "overview.png")

            page.click('a[href="/detail"]')
            page.locator(".nav-main .title", has_text="Trials detail").wait_for()
            row = page.locator(".ms-DetailsRow").filter(has_text="SUCCEEDED")
            row.locator('[data-automation-key="latestAccuracy"]', has_text="0.25 (FINAL)").wait_for()
            assert row.count() == 1
            page.get_by_role("tab", name="Intermediate result").click()
            page.locator(".intermediate-graph canvas").first.wait_for()
            drawn = [0]
            for _ in range(20):  # until ECharts' line animation has finished: the count stops growing
                page.wait_for_timeout(250)
                drawn.append(blue_pixels(page, ".intermediate-graph canvas"))
                if drawn[-1] > 100 and drawn[-1] == drawn[-2]:
                    break
            assert drawn[-1] > 100 and drawn[-1] == drawn[-2], drawn  # the line through the two intermediate results
            page.screenshot(path=tmp_path / "trials-detail.png", full_page=True)

            hosts = {urllib.parse.urlsplit(url).netloc for url in requests if not url.startswith(("data:", "blob:"))}
            assert hosts == {f"127.0.0.1:{handle.port}"}, sorted(url for url in requests if "127.0.0.1" not in url)
            assert [(status, url) for status, url in responses if status >= 400] == []
            font_url = f"{handle.url}/resnas-assets/assets/icons/{ICON_FONT}"
            assert (200, font_url) in responses

            # A fresh profile without the token: refused, the page saying what to open instead.
            stranger = browser.new_context().new_page()
            refused = stranger.goto(f"{handle.url}/oview")
            assert refused.status == 403 and "open the URL that `resnas create` printed" in stranger.content()
            assert stranger.goto(font_url).status == 403
            stranger.screenshot(path=tmp_path / "refused.png")
        finally:
            browser.close()
    assert all((tmp_path / name).stat().st_size > 0 for name in ("overview.png", "trials-detail.png", "refused.png"))
