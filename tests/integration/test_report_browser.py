"""The HTML report rendered in headless Chromium: no JS errors, every chart drawn, no injection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from profile_runs import RESNET_LIKE, add_profiles
from synthetic_runs import XSS, Combo, cpu_run, make_run

from infercmp.report import load_runs, render_html
from infercmp.report.profile import profile_tables
from infercmp.report.summary import combinations

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs /usr/bin/chromium and /usr/bin/chromedriver "
    "(apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1440,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


# Counts traces in every chart after plotly has drawn; a chart that failed has none.
_CHART_STATE = """
const specs = JSON.parse(document.getElementById('infercmp-figures').textContent);
return Object.keys(specs).map(function (id) {
  const div = document.getElementById(id);
  return {
    id: id,
    plotted: !!div && div.classList.contains('js-plotly-plot') && !!div.querySelector('.main-svg'),
    traces: div && div.data ? div.data.length : 0,
    drawn: div ? div.querySelectorAll('.trace, .boxlayer path, .scatterlayer path').length : 0,
  };
});
"""


def _render(browser, page: Path, shots: list[Path]):
    browser.get(page.as_uri())
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe
    charts = browser.execute_script(_CHART_STATE)
    assert charts, "the page has no charts"
    broken = [c for c in charts if not (c["plotted"] and c["traces"] > 0 and c["drawn"] > 0)]
    assert not broken, broken
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1440, min(int(height) + 40, 12000))
    for path in shots:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(path)), f"screenshot to {path} failed"
        assert path.stat().st_size > 10_000
    return charts


def _shots(tmp_path: Path, name: str) -> list[Path]:
    shots = [tmp_path / name]
    extra = os.environ.get("INFERCMP_SCREENSHOT_DIR")
    if extra:
        shots.append(Path(extra) / name)
    return shots


def test_report_renders_in_chromium(browser, tmp_path):
    cpu = cpu_run(tmp_path / "runs")
    gpu = make_run(
        tmp_path / "runs",
        [
            Combo("pytorch", device="cuda", median_ms=2.0),
            Combo("tensorrt", device="cuda", precision="fp16", median_ms=0.5, iterations=3000),
        ],
        host="gpu-box",
        gpus=["NVIDIA H200"],
        seed=1,
    )
    page = tmp_path / "report.html"
    page.write_text(render_html(load_runs([cpu, gpu])), encoding="utf-8")
    charts = _render(browser, page, _shots(tmp_path, "report.png"))
    # across shapes, and per shape: distribution, iterations and resource charts
    assert len(charts) >= 1 + 2 * 2 + 4
    # The outlier checkbox hides the flagged points without an error.
    browser.find_element("id", "show-outliers").click()
    hidden = browser.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap("
        "d => d.data.filter(t => t.meta === 'outliers').map(t => t.visible))"
    )
    assert hidden and all(v == "legendonly" for v in hidden)
    assert not [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


# Rectangles of plotly's toolbar and of the linear/log switch in every chart that has both.
_TOOLBAR_AND_SWITCH = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (div) {
  const bar = div.querySelector('.modebar');
  const menu = div.querySelector('.updatemenu-container');
  if (!bar || !menu || !menu.getBBox().width) return null;
  const a = bar.getBoundingClientRect(), b = menu.getBoundingClientRect();
  return {id: div.id, bar: [a.left, a.top, a.right, a.bottom],
          menu: [b.left, b.top, b.right, b.bottom]};
}).filter(Boolean);
"""


def test_the_linear_log_switch_does_not_overlap_plotly_toolbar(browser, tmp_path):
    run = cpu_run(tmp_path / "runs")
    page = tmp_path / "report.html"
    page.write_text(render_html(load_runs([run])), encoding="utf-8")
    _render(browser, page, _shots(tmp_path, "report-switch.png"))
    for width in (1440, 900):  # a laptop and a narrow window
        browser.set_window_size(width, 900)
        pairs = browser.execute_script(_TOOLBAR_AND_SWITCH)
        assert pairs, "no chart has both a toolbar and a linear/log switch"
        for pair in pairs:
            (al, at, ar, ab), (bl, bt, br, bb) = pair["bar"], pair["menu"]
            overlap = min(ar, br) > max(al, bl) and min(ab, bb) > max(at, bt)
            assert not overlap, (width, pair)


def test_the_profile_section_renders(browser, tmp_path):
    run = make_run(
        tmp_path / "runs",
        [Combo("pytorch", median_ms=4.0), Combo("onnxruntime", median_ms=2.2), Combo("openvino")],
    )
    add_profiles(run, RESNET_LIKE)
    page = tmp_path / "report.html"
    page.write_text(render_html(load_runs([run])), encoding="utf-8")
    _render(browser, page, _shots(tmp_path, "report-profile.png"))
    section = browser.find_element("id", "profile")
    chart = section.find_element("css selector", ".js-plotly-plot")
    # One stacked bar per profiled combination: a trace per module row, each with two bars.
    bars = browser.execute_script(
        "return arguments[0].data.map(t => [t.type, t.orientation, t.y.length]);", chart
    )
    (table,) = profile_tables(combinations(load_runs([run])))
    assert len(bars) == len(table.rows) >= 5 and all(b == ["bar", "h", 2] for b in bars)
    assert chart.find_elements("css selector", ".barlayer .point")
    assert "layer1: " in section.text and "n/a: openvino has no per-layer profiler" in section.text
    assert "kind of work" in section.text


def test_names_from_plugins_do_not_run(browser, tmp_path):
    run = make_run(
        tmp_path / "runs",
        [
            Combo("pytorch", options={"note": XSS}),
            Combo("onnxruntime", status="failed", error=f"<script>{XSS}"),
        ],
        model=f"<script>{XSS}",
        input_name=f"<script>{XSS}",
        host=f"<script>{XSS}",
    )
    page = tmp_path / "report.html"
    page.write_text(render_html(load_runs([run])), encoding="utf-8")
    _render(browser, page, _shots(tmp_path, "report-escaping.png"))
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    # The name reads as typed: escaped for HTML, not swallowed.
    assert XSS in browser.find_element("tag name", "h1").text


# Per chart: the y axis type, which linear/log button is lit, the y tick labels, and the
# rectangles of the legend and of plotly's toolbar.
_AXES_AND_LEGEND = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (div) {
  const rect = function (el) {
    if (!el) return null;
    const r = el.getBoundingClientRect();
    return r.width ? [r.left, r.top, r.right, r.bottom] : null;
  };
  const menu = (div.layout.updatemenus || [])[0];
  return {
    id: div.id,
    title: (div.layout.title || {}).text || '',
    type: div._fullLayout.yaxis.type,
    active: menu ? menu.active || 0 : null,
    ticks: Array.from(div.querySelectorAll('.ytick text')).map(t => t.textContent),
    legend: rect(div.querySelector('.legend')),
    bar: rect(div.querySelector('.modebar')),
  };
});
"""


def test_log_axes_read_whole_values_light_their_button_and_legends_clear_the_toolbar(
    browser, tmp_path
):
    """Issue 23, D.28: 'across shapes' stayed linear with engines 10x apart, the switch lit
    'linear' on a log axis, log ticks read '5, 2, 100, 5, 2, 10', and the outliers legend
    overlapped plotly's toolbar."""
    combos = [
        Combo("pytorch", median_ms=40.0, outliers=6),
        Combo("onnxruntime", median_ms=2.0, outliers=6),
        Combo("pytorch", shape=(320, 320, 3), median_ms=90.0),
        Combo("onnxruntime", shape=(320, 320, 3), median_ms=4.0),
    ]
    page = tmp_path / "report.html"
    page.write_text(render_html(load_runs([make_run(tmp_path / "runs", combos)])), "utf-8")
    _render(browser, page, _shots(tmp_path, "report-log.png"))
    charts = browser.execute_script(_AXES_AND_LEGEND)
    across = [c for c in charts if c["title"].startswith("Median latency against input size")]
    spread = [c for c in charts if c["title"].startswith("Latency distribution")]
    assert across and spread
    for chart in across + spread:
        assert chart["type"] == "log", chart
        assert chart["active"] == 1, chart  # the "log" button
        values = [float(t.replace(",", "")) for t in chart["ticks"]]
        assert values == sorted(values), chart  # whole values, rising: no "5, 2, 100"
    for chart in charts:
        if chart["legend"] and chart["bar"]:
            (al, at, ar, ab), (bl, bt, br, bb) = chart["legend"], chart["bar"]
            assert not (min(ar, br) > max(al, bl) and min(ab, bb) > max(at, bt)), chart
