"""The web view in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, which
scripts/setup.sh installs as root for CI or when asked) driven by Selenium against a live uvicorn
server. Each page is loaded and its content checked, a lineage node is clicked through to the
parent, and screenshots are saved (into $ADAPTER_HUB_SCREENSHOTS when set: that is how the README's
pictures are made). Skipped, with the reason, where no Chromium or driver is installed."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("no Chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver; "
                "ADAPTER_HUB_BROWSER=1 scripts/setup.sh does it as root)", allow_module_level=True)


@pytest.fixture(scope="module")
def base_url(ui_registry):
    import uvicorn

    from adapter_hub.ui import create_app
    from registry import Registry

    reg = Registry.open(ui_registry, create=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(reg), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    reg.close()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("ADAPTER_HUB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver, folder: Path, name: str, height: int | None = None) -> Path:
    """The whole page (up to `height` px) as a small palette PNG."""
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1200, min(height or full, full) + 120)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1200, 900)
    try:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=96).save(path, optimize=True)
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        pass
    assert path.stat().st_size > 5000  # a real picture, not an error page
    return path


def follow(driver, element, path: str) -> None:
    """Click and wait for the page at `path` to load (a click does not wait for the navigation)."""
    from selenium.webdriver.support.ui import WebDriverWait

    element.click()
    WebDriverWait(driver, 20).until(lambda d: d.current_url.split("//", 1)[1].partition("/")[2] == path.lstrip("/")
                                    and d.execute_script("return document.readyState") == "complete")


def rows(driver, table_id: str) -> list[str]:
    return [r.text for r in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def test_each_page_shows_the_registry(browser, base_url, shots, ui_registry):
    from registry import Registry

    reg = Registry.open(ui_registry, create=False)
    tasks = reg.tasks()
    topic_versions = [v.ref for v in reg.versions("topic")]
    reg.close()

    browser.get(base_url + "/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Tasks"
    assert [r.split()[0] for r in rows(browser, "tasks")] == [t["task"] for t in tasks]
    screenshot(browser, shots, "tasks")

    follow(browser, browser.find_element(By.LINK_TEXT, "topic"), "/tasks/topic")
    assert [r.split()[0] for r in rows(browser, "versions")] == topic_versions

    browser.get(base_url + "/versions/merged:1")
    edges = browser.find_elements(By.CSS_SELECTOR, "svg.lineage g.edge")
    kinds = sorted(e.get_attribute("data-kind") for e in edges)
    assert kinds.count("merged_from") == 2 and kinds.count("reduced_from") == 1
    assert {n.get_attribute("data-ref") for n in browser.find_elements(By.CSS_SELECTOR, "svg.lineage g.node")} >= \
        {"topic:1", "sentiment:1", "merged:1", "merged:2"}
    screenshot(browser, shots, "version", height=1100)
    follow(browser, browser.find_element(By.CSS_SELECTOR, 'svg.lineage g.node[data-ref="topic:1"] a'),
           "/versions/topic:1")  # to a parent, through the graph
    assert browser.find_element(By.TAG_NAME, "h1").text == "topic:1"

    browser.get(base_url + "/runs")
    assert [r.split()[0] for r in rows(browser, "runs")] == ["ui-run"]
    follow(browser, browser.find_element(By.LINK_TEXT, "ui-run"), "/runs/ui-run")
    heatmaps = browser.find_elements(By.CSS_SELECTOR, "svg.heatmap")
    assert len(heatmaps) == 2
    for svg in heatmaps:
        assert len(svg.find_elements(By.CSS_SELECTOR, "rect.cell")) == 4  # 2 tasks x 2 steps
        assert "after topic" in svg.text and "sentiment" in svg.text
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.curves path.band")) == 2
    assert [r.split()[0] for r in rows(browser, "metrics")] == ["seq", "per_task"]
    assert rows(browser, "routing")[0].startswith("per_task prototype 2")
    screenshot(browser, shots, "run")

    browser.get(base_url + "/runs")
    browser.find_element(By.CSS_SELECTOR, 'input[name="run"][value="ui-run"]').click()
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form#compare button[type=submit]"), "/compare?run=ui-run")
    assert len(rows(browser, "comparison")) == 2
    screenshot(browser, shots, "compare")


def test_a_hostile_tag_is_shown_as_text_and_never_runs(browser, base_url, hostile):
    browser.get(base_url + "/versions/merged:1")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert f"note={hostile}" in browser.find_element(By.ID, "tags").text
    assert browser.find_elements(By.TAG_NAME, "script") == []  # the pages carry no script at all
    browser.get(base_url + "/search?tag=note%3D" + hostile)
    assert rows(browser, "results")[0].startswith("merged:1")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
