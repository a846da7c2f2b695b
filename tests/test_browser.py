"""report.html in a real browser (headless Chromium driven by Selenium), opened from disk with
the network off: no request leaves the page, every chart renders, hovering a curve names its
run, the run table sorts and filters; a screenshot is saved for a person to look at."""

from __future__ import annotations

import json
import time

import pytest

from conftest import needs, needs_program, quick_cfg
from fitscope.report.build import build_report
from fitscope.report.settings import ReportSettings
from fitscope.train.runner import run

pytestmark = pytest.mark.slow


@pytest.fixture
def browser():
    needs("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = needs_program("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1366,900",  # a laptop's screen
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(needs_program("chromedriver")), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    yield driver
    driver.quit()


def _requests(driver) -> list[str]:
    """Every URL the page asked for since the last call."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_report_html_in_headless_chromium_offline(browser, tmp_path):
    for i, activation in enumerate(("relu", "sigmoid", "selu")):
        cfg = quick_cfg(f"activation={activation}", "model.width=32", f"trainer.epochs={4 + 3 * i}")
        run(cfg, tmp_path / "sweep" / str(i), overrides=[f"activation={activation}"])
    settings = ReportSettings.from_mapping(dir=str(tmp_path / "reports"))
    folder = build_report([tmp_path / "sweep"], settings)

    browser.get((folder / "report.html").as_uri())
    time.sleep(1)  # plotly draws after the page has loaded
    assert browser.title == "fitscope report: sweep"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    assert [
        url for url in _requests(browser) if not url.startswith(("file:", "data:", "blob:"))
    ] == []

    # every chart of the page rendered: a plotly graph with its drawing in it
    figures = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure')).map(f => "
        "[f.id, f.querySelectorAll('.js-plotly-plot .main-svg').length])"
    )
    assert {"curves", "runs", "effects"} <= {name for name, _ in figures}
    assert all(svgs > 0 for _, svgs in figures), figures

    # hovering a curve of the per-run chart names its run
    label = browser.execute_script(
        "var gd = document.getElementById('chart-runs');"
        "var i = gd.data.findIndex(t => t.name === 'val loss');"
        "Plotly.Fx.hover(gd, [{curveNumber: i, pointNumber: 2}]);"
        "return document.querySelector('#chart-runs .hoverlayer').textContent;"
    )
    assert "activation.name=relu trainer.epochs=4 (0)" in label

    # the run table: verdict, test accuracy and reason on a laptop's screen without scrolling
    headers = browser.find_elements("css selector", "table.runs th")
    names = [h.text for h in headers]
    for column in ("verdict", "test_acc", "reason"):
        box = headers[names.index(column)].rect
        assert box["x"] + box["width"] <= 1366, column
    column = names.index("epochs")
    cells = (
        "return Array.from(document.querySelector('table.runs').tBodies[0].rows)"
        f".filter(r => r.style.display !== 'none').map(r => r.children[{column}].textContent)"
    )
    headers[column].click()
    assert browser.execute_script(cells) == ["4", "7", "10"]
    headers[column].click()
    assert browser.execute_script(cells) == ["10", "7", "4"]
    browser.find_element("css selector", "input.filter").send_keys("sigmoid")
    assert browser.execute_script(cells) == ["7"]
    assert "1 of 3 runs" in browser.find_element("css selector", "input.filter + span").text
    assert [
        url for url in _requests(browser) if not url.startswith(("file:", "data:", "blob:"))
    ] == []

    # on a narrow window the section links wrap rather than run off the page
    browser.set_window_size(640, 900)
    links = browser.find_elements("css selector", "nav a")
    right = max(link.rect["x"] + link.rect["width"] for link in links)
    assert right <= browser.execute_script("return window.innerWidth"), right

    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
