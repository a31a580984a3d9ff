"""Headless Chromium (Debian's `chromium` + `chromium-driver`, installed by tests/run.sh) driven by
selenium, with the browser console and the network log kept for the checks.

    python -m tests.evaluate.browser eval-demo/index.html docs/report.png   # the README's screenshot
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def start_browser(width: int = 1300, height: int = 1500):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    driver = shutil.which(DRIVER) or "/usr/bin/chromedriver"
    assert binary, "chromium is not installed: bash tests/run.sh installs it (apt-get install chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}",
                "--disable-background-networking", "--no-first-run"):
        options.add_argument(arg)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def open_page(browser, path: Path) -> dict:
    """Load a page from file://; returns {'console': [...], 'requests': [urls]} of that load."""
    browser.get_log("browser"), browser.get_log("performance")  # drop what earlier pages left
    url = path.resolve().as_uri()
    browser.get(url)
    assert browser.execute_script("return document.body.dataset.ready") == "1", "the page's script did not finish"
    messages = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    requests = [m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"]
    return {"url": url, "console": browser.get_log("browser"), "requests": requests}


def screenshot(page: Path, png: Path, width: int = 1300, height: int = 1300, colours: int = 128, threshold: str = "0.6") -> int:
    """A small PNG of the page's top (palette-quantised), the slider moved off the policy's point
    to `threshold`; returns the PNG's size in bytes."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    browser = start_browser(width, height)
    try:
        open_page(browser, page)
        box = browser.find_element(By.ID, "thr-input")
        box.clear()
        box.send_keys(threshold)
        data = browser.get_screenshot_as_png()
    finally:
        browser.quit()
    image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colours)
    png.parent.mkdir(parents=True, exist_ok=True)
    image.save(png, optimize=True)
    return png.stat().st_size


if __name__ == "__main__":
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])), "bytes")
