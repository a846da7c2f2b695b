"""report.html in a real browser (headless Chromium driven by Selenium): no console errors,
every image loads, the tables sort; a screenshot is saved for a person to look at."""

from __future__ import annotations

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
        "--window-size=1300,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(needs_program("chromedriver")), options=options)
    yield driver
    driver.quit()


def test_report_html_in_headless_chromium(browser, tmp_path):
    for i, activation in enumerate(("relu", "sigmoid", "selu")):
        cfg = quick_cfg(f"activation={activation}", "model.width=32", f"trainer.epochs={4 + 3 * i}")
        run(cfg, tmp_path / "sweep" / str(i), overrides=[f"activation={activation}"])
    settings = ReportSettings.from_mapping(dir=str(tmp_path / "reports"))
    folder = build_report([tmp_path / "sweep"], settings)

    browser.get((folder / "report.html").as_uri())
    assert browser.title == "fitscope report: sweep"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
    )
    assert len(images) >= 4
    assert all(complete and width > 0 for _, complete, width in images), images

    # Click "epochs_run" twice: the runs sort by it, ascending then descending.
    headers = browser.find_elements("css selector", "table.sortable th")
    column = [h.text for h in headers].index("epochs_run")
    script = (
        "return Array.from(document.querySelector('table.sortable').tBodies[0].rows)"
        f".map(r => r.children[{column}].textContent)"
    )
    headers[column].click()
    assert browser.execute_script(script) == ["4", "7", "10"]
    headers[column].click()
    assert browser.execute_script(script) == ["10", "7", "4"]

    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
