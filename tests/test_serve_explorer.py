"""The front explorer page (``GET /``) in a real headless Chromium (selenium + chromedriver),
against a real uvicorn server on 127.0.0.1: plots, budget picking, an uploaded PNG's answer."""

import base64
import shutil

import httpx
import numpy as np
import pytest
from PIL import Image

from liveserver import live_server
from tinymodel import write_tiny_zoo_model

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_page_and_assets_are_package_data():
    from importlib import resources

    static = resources.files("serve").joinpath("static")
    assert {p.name for p in static.iterdir()} >= {"explorer.html", "explorer.js", "explorer.css"}
    for name in ("explorer.html", "explorer.js", "explorer.css"):  # no CDN, nothing external
        text = static.joinpath(name).read_text().replace("http://www.w3.org/2000/svg", "")
        assert "://" not in text and "//cdn" not in text, name


@pytest.fixture(scope="module")
def base(tmp_path_factory, one_torch_thread):
    weights = tmp_path_factory.mktemp("explorer") / "model.safetensors"
    write_tiny_zoo_model(weights, size=12, classes=CLASSES, middle=[0.5, 0.7, 0.5, 0.7, 0.5, 0.7])
    with live_server(weights) as url:
        yield url


def test_page_served_with_its_assets(base):
    r = httpx.get(f"{base}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in r.text and 'href="/metrics"' in r.text
    for name, media in (("explorer.js", "text/javascript"), ("explorer.css", "text/css")):
        a = httpx.get(f"{base}/static/{name}")
        assert a.status_code == 200 and a.headers["content-type"].startswith(media)
    missing = httpx.get(f"{base}/static/../app.py")
    assert missing.status_code == 404
    assert httpx.get(f"{base}/static/nope.js").json()["status"] == 404


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium/chromedriver on PATH (.ci/run installs Debian's chromium and "
                    "chromium-driver when it runs as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,1400"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver_path))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "shirt.png"
    Image.fromarray((np.random.default_rng(4).random((28, 28)) * 255).astype(np.uint8)).save(path)
    return path


def _wait(driver, css, text=None, timeout=20):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout)
    if text is None:
        return wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return driver.find_element(By.CSS_SELECTOR, css)


def test_pick_a_point_upload_an_image_see_the_answer(browser, base, png, tmp_path):
    from selenium.webdriver.common.by import By

    front = httpx.get(f"{base}/configs").json()["configs"]
    browser.get(f"{base}/")
    _wait(browser, "body[data-ready=true]")
    for plot in ("plot-mflops", "plot-latency"):
        dots = browser.find_elements(By.CSS_SELECTOR, f"#{plot} circle")
        assert [d.get_attribute("data-id") for d in dots] == [c["id"] for c in front]
    assert "3 configurations" in browser.find_element(By.ID, "summary").text
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "nav a")}
    assert links == {f"{base}/docs", f"{base}/metrics"}

    middle = front[1]
    browser.find_element(By.CSS_SELECTOR, f"#plot-mflops circle[data-id={middle['id']}]").click()
    assert f"/predict will use {middle['id']}" in _wait(browser, "#selected", middle["id"]).text
    browser.find_element(By.ID, "file").send_keys(str(png))
    served = _wait(browser, "#served-config", middle["id"]).text
    want = httpx.post(f"{base}/predict", params={"mflops": middle["mflops"], "top_k": 5},
                      files={"file": ("shirt.png", png.read_bytes(), "image/png")}).json()
    assert served.startswith(f"{middle['id']} (")
    assert browser.find_element(By.ID, "top1").text == want["predictions"][0]["top_k"][0]["label"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#topk tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [
        t["label"] for t in want["predictions"][0]["top_k"]]
    assert browser.find_element(By.CSS_SELECTOR, "#plot-latency circle.served"
                                ).get_attribute("data-id") == middle["id"]
    shot = tmp_path / "explorer.png"
    assert browser.save_screenshot(str(shot)) and Image.open(shot).size[0] > 500


def test_a_budget_below_the_minimum_shows_the_servers_422(browser, base, png):
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/")
    _wait(browser, "body[data-ready=true]")
    browser.find_element(By.CSS_SELECTOR, "input[name=kind][value=mflops]").click()
    browser.find_element(By.ID, "budget").send_keys("0.001")
    assert "below the minimum" in _wait(browser, "#selected", "below").text
    browser.find_element(By.ID, "file").send_keys(str(png))
    assert "422: mflops=0.001 is below" in _wait(browser, "#error", "422").text


def test_dropping_an_image_classifies_it(browser, base, png):
    """A drop event carrying the PNG (built in the page: WebDriver cannot drag OS files)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/")
    _wait(browser, "body[data-ready=true]")
    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
        document.getElementById("drop").dispatchEvent(
            new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    """, base64.b64encode(png.read_bytes()).decode())
    want = httpx.post(f"{base}/predict", files={"file": ("p.png", png.read_bytes(), "image/png")}
                      ).json()
    served = _wait(browser, "#served-config", want["config"]["id"]).text
    assert served.startswith(want["config"]["id"])
    assert browser.find_element(By.ID, "top1").text == want["predictions"][0]["top_k"][0]["label"]
