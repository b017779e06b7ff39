"""Regenerate the pictures in README.md and docs/ (docs/images/*.png) from real quick runs on digits, on the CPU.

    python benchmarks/readme_pictures.py            # all of them, ~20 min on 2 idle cores
    python benchmarks/readme_pictures.py --only nash,stagewise

Each method runs its quick config (nni_configs/*_quick.yml; ProxylessNAS the quickstart, quickstart.yml) through
the real NNI manager on 127.0.0.1 (ports 8950..8960), as `resnas create --wait` does; the figure is the one the
method draws (`resnas plot ID`: lineage.png, fig5.png, stagewise.png; a ProxylessNAS trial's gates.png). The NASH
search's dashboard is photographed in headless Chromium (Debian's /usr/bin/chromium through Playwright, as
tests/test_dashboard_browser.py does: the token URL, the overview, the trials table) before its manager stops.
Every experiment this script starts is stopped by its ID when its picture is taken, or when it fails.

The PNGs are reduced to a 256-colour palette so that each stays under 150 KB. Experiments and the raw figures go
to --work (default runs/readme_pictures, ignored by git).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository: search_spaces, strategies, trainers

import yaml  # noqa: E402

from strategies.launch import create_experiment, stop_experiment, wait_for_experiment  # noqa: E402
from strategies.launch.rest import experiment_status, tuner_state  # noqa: E402
from strategies.methods import METHODS  # noqa: E402

IMAGES = REPO / "docs" / "images"
PORTS = range(8950, 8961)
MAX_BYTES = 150_000
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# name -> (config, the picture's file name under docs/images)
RUNS = {
    "nash": ("hill_climbing_quick.yml", "nash_lineage.png"),
    "resbuilder": ("layer_pruning_quick.yml", "resbuilder_fig5.png"),
    "stagewise": ("stagewise_quick.yml", "stagewise.png"),
    "proxyless": ("quickstart.yml", "proxyless_gates.png"),
}
DASHBOARD_OF = "nash"  # the search whose dashboard is photographed: 14 trials fill its table


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def quick_config(name: str, work: Path) -> Path:
    """The method's quick config with absolute code folders and its experiments under `work`."""
    config = yaml.safe_load((REPO / "nni_configs" / RUNS[name][0]).read_text())
    config["trialCodeDirectory"] = str(REPO)
    config["tuner"]["codeDirectory"] = str(REPO)
    config["experimentWorkingDirectory"] = str(work / "nni-experiments")
    path = work / f"{name}.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def shrink(source: Path, target: Path, width: int | None = None) -> Path:
    """A copy of `source` at most `width` pixels wide, in a 256-colour palette, optimised: well under 150 KB."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    if width is not None and image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    size = target.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{target} is {size} bytes, over {MAX_BYTES}; draw it smaller")
    log(f"wrote {target.relative_to(REPO)} ({size / 1000:.0f} KB, {image.width}x{image.height})")
    return target


def photograph_dashboard(handle, work: Path) -> list[Path]:
    """The overview and the trials table of a finished experiment, in headless Chromium with the token URL."""
    from playwright.sync_api import sync_playwright

    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(handle.dashboard_url)
            page.wait_for_url(f"{handle.url}/oview")
            page.locator(".nav-main .title", has_text="Overview").wait_for()
            page.wait_for_load_state("networkidle")
            page.evaluate("async () => { await document.fonts.ready; }")
            page.wait_for_timeout(3000)  # ECharts' animations
            shots.append(work / "dashboard_overview.png")
            page.screenshot(path=shots[-1])

            page.click('a[href="/detail"]')
            page.locator(".nav-main .title", has_text="Trials detail").wait_for()
            page.locator(".ms-DetailsRow").filter(has_text="SUCCEEDED").first.wait_for()
            page.evaluate("async () => { await document.fonts.ready; }")
            page.mouse.move(1390, 890)  # away from the side bar: no tooltip in the picture
            page.wait_for_timeout(3000)
            shots.append(work / "dashboard_trials.png")
            page.screenshot(path=shots[-1], full_page=True)
        finally:
            browser.close()
    return shots


def run(name: str, work: Path, port: int, dashboard: bool) -> dict:
    """One quick search through the manager; its figure (and dashboard) into docs/images; the manager stopped."""
    config = quick_config(name, work)
    log(f"{name}: starting {RUNS[name][0]} on port {port}")
    started = time.monotonic()
    handle = create_experiment(config, port=port)
    log(f"{name}: experiment {handle.id} started; dashboard: {handle.url}")
    try:
        status = wait_for_experiment(handle, poll_seconds=3.0, timeout=3600)  # the quickstart: ~10 min idle, 30+ loaded
        deadline = time.monotonic() + 15  # wait may return NO_MORE_TRIAL a moment before DONE
        while experiment_status(handle) != "DONE" and time.monotonic() < deadline:
            time.sleep(0.5)
        wall = time.monotonic() - started
        log(f"{name}: experiment {handle.id} ended {status} after {wall:.0f} s")
        raw = []
        if dashboard:
            raw = photograph_dashboard(handle, work)
        state = tuner_state(handle)
        if state is not None:  # a multi-trial search: the method's figure, from its state as `resnas plot` draws it
            figure = METHODS[state["method"]].figure
            figure_path = figure.draw(state, work / name / figure.file_name)
        else:  # ProxylessNAS: the trial's own gates.png
            figure_path = next(handle.folder.glob("**/gates.png"))
    finally:
        stop_experiment(handle)
        log(f"{name}: experiment {handle.id} stopped")
    written = [shrink(figure_path, IMAGES / RUNS[name][1])]
    for shot in raw:
        written.append(shrink(shot, IMAGES / shot.name, width=1100))
    return {"method": name, "experiment": handle.id, "status": status, "wall_s": round(wall),
            "pictures": [str(path.relative_to(REPO)) for path in written]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "readme_pictures")
    parser.add_argument("--no-dashboard", action="store_true", help="skip the dashboard screenshots")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}; use some of {', '.join(RUNS)}")
    args.work = args.work.resolve()  # the configs name it; NNI would read a relative path from their folder
    dashboard = not args.no_dashboard and DASHBOARD_OF in names
    if dashboard and not CHROMIUM.exists():
        parser.error(f"the dashboard screenshot needs {CHROMIUM} (`make browser`); or pass --no-dashboard")
    args.work.mkdir(parents=True, exist_ok=True)  # each experiment has a folder of its own (its ID) in there
    summary = []
    for port, name in zip(PORTS, names):
        summary.append(run(name, args.work, port, dashboard and name == DASHBOARD_OF))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
