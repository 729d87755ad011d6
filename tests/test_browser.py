"""serve.py's page in a real browser: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver, against serve.py started as a user starts it. Open a photo, paint with a
mouse and with a finger, draw a box and undo it, Complete: the result has the photo's size and
differs from it only where the page painted the hole."""
import base64
import io
import re
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import smooth_photo
from test_serve import start_server, stop_server

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    webdriver = None

pytestmark = [
    pytest.mark.skipif(webdriver is None, reason="selenium is not installed (pip install -r"
                                                 " requirements.txt)"),
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Chromium and its driver are not"
                       " installed (as root: apt-get install chromium chromium-driver, which"
                       " .ci/run does)")]

HEIGHT, WIDTH = 96, 128
MOUSE_STROKE = [(15, 20), (30, 28), (45, 34), (60, 40), (72, 46)]   # image pixels
TOUCH_STROKE = [(88, 70), (100, 74), (114, 80)]


@pytest.fixture(scope="module")
def server(tiny_training):
    root, _ = tiny_training
    process, url = start_server(["--session", "tiny"], root)
    yield url
    status, stderr = stop_server(process)
    assert status == 0 and "Traceback" not in stderr, stderr


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No background traffic: this machine, like CI, reaches nothing but its own pages.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def overlay_rect(driver):
    return driver.execute_script(
        "const r = document.getElementById('overlay').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height];")


def on_screen(rect, point):
    left, top, width, height = rect
    return round(left + point[0] * width / WIDTH), round(top + point[1] * height / HEIGHT)


def drag(driver, points, kind=interaction.POINTER_MOUSE):
    """Press at the first point, move through the others, release: pointer events of `kind`."""
    rect = overlay_rect(driver)
    actions = ActionBuilder(driver, mouse=PointerInput(kind, kind))
    actions.pointer_action.move_to_location(*on_screen(rect, points[0])).pointer_down()
    for point in points[1:]:
        actions.pointer_action.move_to_location(*on_screen(rect, point))
    actions.pointer_action.pointer_up()
    actions.perform()


def painted(driver):
    """How many of the overlay's pixels are painted (as the page thresholds them)."""
    return driver.execute_script(
        "const c = document.getElementById('overlay');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] >= 128; return n;")


def download(driver, element_id):
    """The bytes behind an image's src or a link's href (blob: URLs), as the browser has them."""
    data = driver.execute_async_script("""
        const done = arguments[arguments.length - 1], el = document.getElementById(arguments[0]);
        fetch(el.src || el.href).then((r) => r.arrayBuffer()).then((buffer) => {
          const bytes = new Uint8Array(buffer); let text = "";
          for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
          done(btoa(text));
        }).catch((error) => done(`failed: ${error}`));""", element_id)
    assert not data.startswith("failed"), data
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def stroke_region(strokes, width):
    """Where strokes of `width` pixels through these points can paint (with a pixel of slack)."""
    region = np.zeros((HEIGHT, WIDTH), np.uint8)
    for points in strokes:
        cv2.polylines(region, [np.array(points, np.int32)], False, 255,
                      int(np.ceil(width)) + 3)
        for point in points:
            cv2.circle(region, point, int(np.ceil(width / 2)) + 2, 255, -1)
    return region > 0


def test_paint_a_hole_complete_and_get_the_photo_back_changed_only_there(server, browser,
                                                                         tmp_path):
    photo = smooth_photo(np.random.default_rng(11), HEIGHT, WIDTH)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    browser.get(server)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: "session tiny" in d.find_element(By.ID, "model").text)
    assert browser.find_element(By.ID, "model").text == "session tiny · trained at 32 px"

    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "photo.png"))
    wait.until(lambda d: d.find_element(By.ID, "editor").is_displayed())
    assert browser.find_element(By.ID, "complete").get_attribute("disabled")
    rect = overlay_rect(browser)
    assert rect[2] / rect[3] == pytest.approx(WIDTH / HEIGHT, rel=0.02)
    brush = 32 * WIDTH / rect[2]  # the slider's 32 screen pixels, in the photo's pixels

    drag(browser, MOUSE_STROKE)
    after_mouse = painted(browser)
    drag(browser, TOUCH_STROKE, interaction.POINTER_TOUCH)
    after_touch = painted(browser)
    assert 0 < after_mouse < after_touch

    browser.find_element(By.ID, "mode-box").click()
    drag(browser, [(100, 8), (122, 26)])
    assert painted(browser) >= after_touch + 20 * 16
    browser.find_element(By.ID, "undo").click()
    assert painted(browser) == after_touch
    browser.find_element(By.ID, "mode-brush").click()

    scale = browser.find_element(By.ID, "scale")
    assert scale.get_attribute("value") == "native"  # the server's --scale
    browser.execute_script("arguments[0].value = 'auto';", scale)
    browser.find_element(By.ID, "complete").click()
    wait.until(lambda d: d.find_element(By.ID, "results").is_displayed())
    status = browser.find_element(By.ID, "status").text
    assert re.fullmatch(r"Filled [\d,]+ pixels in \d+\.\d s\.", status), status

    completed = download(browser, "completed")
    blended = download(browser, "blended")
    hole = download(browser, "download-mask")[..., 0] > 127
    for image_id in ("completed", "blended"):
        size = browser.execute_script(
            f"const i = document.getElementById('{image_id}'); return [i.naturalWidth,"
            " i.naturalHeight, i.getBoundingClientRect().width > 0];")
        assert size == [WIDTH, HEIGHT, True]
    assert completed.shape == blended.shape == photo.shape and hole.shape == photo.shape[:2]
    assert int(status.split()[1].replace(",", "")) == hole.sum() == after_touch
    assert not (hole & ~stroke_region([MOUSE_STROKE, TOUCH_STROKE], brush)).any()
    for points in (MOUSE_STROKE, TOUCH_STROKE):
        assert hole[tuple(np.array(points)[:, ::-1].T)].all()
    for result in (completed, blended):
        assert np.array_equal(result[~hole], photo[~hole])
        assert (result[hole] != photo[hole]).any()
    assert console_errors(browser) == []


def test_the_api_docs_render_without_the_internet(server, browser):
    browser.get(server + "docs")
    paths = (By.CSS_SELECTOR, ".opblock-summary-path")
    WebDriverWait(browser, 30).until(
        lambda d: any("/api/complete" in e.text for e in d.find_elements(*paths)))
    assert console_errors(browser) == []
