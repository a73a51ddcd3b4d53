"""Publish a bench run under docs/results/: HTML report, md/csv summaries, run metadata and PNGs.

    python benchmarks/publish_h200.py /work/.device/8/20261128-181543-resnet50.tar.gz
    python benchmarks/publish_h200.py RUN_DIR --out docs/results/cpu-2core --charts cpu \\
        --full-page docs/images/report.png

The first form regenerates docs/results/h200 from the H200 run tarball; the second publishes a
run directory made on a CPU machine the same way. The report and summaries come from the
`infercmp report` command itself; the PNGs are screenshots of the report's charts taken in
headless Chromium (selenium, /usr/bin/chromium and /usr/bin/chromedriver). Nothing is measured
or recomputed here: where a published run has known problems, a note saying so is put at the
top of the HTML page (see RUN_NOTES).
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
)
WINDOW_WIDTH = 1280  # a laptop screen, for the charts
FULL_PAGE_WIDTH = 1440  # the whole summary table fits at this width
MAX_PNG_BYTES = 300_000

# (file name, section: "across" or the index of the shape, chart title in the report, legend).
# Charts that rely on the page's shared legend get their own, at the right, for the PNG alone.
GPU_CHARTS = [
    ("latency-224.png", 0, "Latency distribution", False),
    ("latency-vs-shape.png", "across", "Median latency against input size", True),
    ("vram-224.png", 0, "Process GPU memory (VRAM)", True),
    ("gpu-util-224.png", 0, "GPU utilisation", True),
]
CPU_CHARTS = [
    ("latency-224.png", 0, "Latency distribution", False),
    ("ram-224.png", 0, "Process memory (RSS)", True),
    ("cpu-224.png", 0, "Process CPU (100% = one core)", True),
]

# Known facts about published runs, shown at the top of their HTML page. Keyed by run id.
RUN_NOTES = {
    "20261128-181543-resnet50": [
        "<b>Eager PyTorch rows are launch-bound</b>: the GPU waits for Python to launch each "
        "kernel (GPU utilisation about 30%, against 90-100% with CUDA graphs), so they measure "
        "the host more than the GPU, and they moved by up to 30% from one process to the next "
        "on this machine (see validation.md). Compare engines on the CUDA-graph rows.",
        "<b>torch.compile is not in this run</b> (max-autotune compiles for about four minutes "
        "per shape); its figures at 224x224 come from benchmarks/gpu_validate.py, in "
        "validation.md beside this page.",
        "TensorRT is skipped: the only TensorRT that could be carried to the H200 is "
        "TensorRT-RTX 1.7, which built the plans there but whose runtime refuses compute "
        "capability 9.0 (the tool's message is in the table).",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory or a .tar.gz holding one")
    parser.add_argument("--out", type=Path, default=Path("docs/results/h200"))
    parser.add_argument("--charts", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--full-page", type=Path, help="also save a full-page screenshot here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="infercmp-publish-") as tmp:
        run_dir = unpack(args.run, Path(tmp)) if args.run.is_file() else args.run
        publish(run_dir, args.out, GPU_CHARTS if args.charts == "gpu" else CPU_CHARTS)
        if args.full_page:
            with browser(Path(tmp) / "profile") as driver:
                open_report(driver, args.out / "report.html")
                save_full_page(driver, args.full_page)


def unpack(archive: Path, into: Path) -> Path:
    """Extract the tarball (no links, nothing outside `into`) and return its one run directory."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    runs = [p.parent for p in into.glob("*/run.json")]
    if len(runs) != 1:
        sys.exit(f"{archive}: expected one run directory with a run.json, found {len(runs)}")
    return runs[0]


def publish(run_dir: Path, out: Path, charts: list[tuple]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.html"
    infercmp("report", str(run_dir), "-o", str(report))
    infercmp("report", str(run_dir), "--format", "md", "-o", str(out / "summary.md"))
    infercmp("report", str(run_dir), "--format", "csv", "-o", str(out / "summary.csv"))
    # The metadata and the results (results.jsonl; summary.json in schema version 1 runs): the
    # parquet files of raw rows stay out of the repository.
    for name in ("run.json", "results.jsonl", "summary.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
    notes = RUN_NOTES.get(run_dir.name)
    if notes:
        add_notes(report, notes)
    with browser(out / ".chromium-profile") as driver:
        open_report(driver, report)
        for name, section, title, legend in charts:
            save_chart(driver, section, title, out / name, legend)
    shutil.rmtree(out / ".chromium-profile", ignore_errors=True)
    for path in out.iterdir():
        path.chmod(0o644)  # the report command writes private temporary files


def infercmp(*args: str) -> None:
    print("$ infercmp", " ".join(args), flush=True)
    # The installed command's entry point, in this interpreter (the package has no __main__).
    code = "from infercmp.cli import main; main()"
    subprocess.run([sys.executable, "-c", code, *args], check=True)


def add_notes(report: Path, notes: list[str]) -> None:
    """Put the publication notes at the top of the page, marked as added when publishing."""
    items = "".join(f"<li>{note}</li>" for note in notes)
    block = (
        '<section class="notice warn"><h2>Read this first (added when publishing, by '
        "benchmarks/publish_h200.py)</h2><ul>" + items + "</ul></section>"
    )
    html = report.read_text(encoding="utf-8")
    marker = "<main>\n"
    if marker not in html:
        sys.exit(f"{report}: no <main> element to put the notes in")
    report.write_text(html.replace(marker, marker + block + "\n", 1), encoding="utf-8")


class browser:
    """Headless Chromium through selenium, quit on exit."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile

    def __enter__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        options.add_argument(f"--window-size={WINDOW_WIDTH},1000")
        options.add_argument("--force-device-scale-factor=1")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(180)
        return self.driver

    def __exit__(self, *exc) -> None:
        self.driver.quit()


_CHART_STATE = """
const specs = JSON.parse(document.getElementById('infercmp-figures').textContent);
return Object.keys(specs).filter(function (id) {
  const div = document.getElementById(id);
  return !(div && div.querySelector('.main-svg'));
}).length;
"""


_HIDE_MODEBAR = """
const style = document.createElement('style');
style.textContent = '.modebar-container { display: none !important; }';
document.head.appendChild(style);
"""


def open_report(driver, report: Path) -> None:
    driver.get(report.resolve().as_uri())
    driver.execute_script(_HIDE_MODEBAR)  # plotly's toolbar means nothing in a picture
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    if errors:
        sys.exit(f"{report}: JavaScript errors: {errors}")
    deadline = time.monotonic() + 60
    while driver.execute_script(_CHART_STATE):
        if time.monotonic() > deadline:
            sys.exit(f"{report}: some charts did not draw within 60 s")
        time.sleep(0.2)


_FIND_CHART = """
const section = arguments[0] === 'across'
  ? document.getElementById('across') : document.getElementById('shape-' + arguments[0]);
if (!section) return null;
for (const div of section.querySelectorAll('.js-plotly-plot')) {
  if (div.layout && div.layout.title && div.layout.title.text === arguments[1]) return div.id;
}
return null;
"""


_ADD_LEGEND = """
const div = document.getElementById(arguments[0]);
div.style.width = arguments[1] + 'px';
// Beside a table (across shapes), the wider chart takes the row alone.
if (div.parentElement.classList.contains('grid2')) div.parentElement.style.display = 'block';
return Plotly.relayout(div, {
  showlegend: true, width: arguments[1], height: 340,
  legend: {orientation: 'v', x: 1.02, xanchor: 'left', y: 1, yanchor: 'top', font: {size: 11}},
}).then(function () { return true; });
"""


def save_chart(driver, section, title: str, path: Path, legend: bool) -> None:
    div_id = driver.execute_script(_FIND_CHART, section, title)
    if div_id is None:
        sys.exit(f"no chart titled {title!r} in section {section!r} of the report")
    if legend:
        driver.execute_script(_ADD_LEGEND, div_id, WINDOW_WIDTH - 120)
    element = driver.find_element("id", div_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    time.sleep(0.5)
    write_png(element.screenshot_as_png, path)


def save_full_page(driver, path: Path) -> None:
    """The whole page at laptop width; halved and reduced to a palette to stay small."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(FULL_PAGE_WIDTH, min(height + 20, 16000))
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(FULL_PAGE_WIDTH, min(height + 20, 16000))
    time.sleep(1.0)  # plotly redraws responsive charts on resize
    driver.execute_script("window.scrollTo(0, 0)")
    write_png(driver.get_screenshot_as_png(), path, scale=0.5)


def write_png(data: bytes, path: Path, scale: float = 1.0) -> None:
    """Save a screenshot; shrink it (scale, then a 256-colour palette) past MAX_PNG_BYTES."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if scale == 1.0 and len(data) <= MAX_PNG_BYTES:
        path.write_bytes(data)
    else:
        from PIL import Image

        image = Image.open(io.BytesIO(data)).convert("RGB")
        if scale != 1.0:
            size = (round(image.width * scale), round(image.height * scale))
            image = image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "PNG", optimize=True)
        if buffer.tell() > MAX_PNG_BYTES:
            buffer = io.BytesIO()
            image.quantize(256, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
        path.write_bytes(buffer.getvalue())
    print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)", flush=True)


if __name__ == "__main__":
    main()
