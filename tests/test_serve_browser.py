"""The `convzoo serve` page in a real browser: headless Debian Chromium driven by Selenium uploads a
photo, and the top-5 it shows must be `convzoo.inference.predict.predict`'s for the same image and weights.

Screenshots (desktop and phone width) are saved under the test's tmp dir and, when CONVZOO_ARTIFACTS
is set, there too."""

import os
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
        "apt-get install chromium chromium-driver",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
pytest.importorskip("fastapi", reason="convzoo[serve] is not installed")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

import _serve_models  # noqa: E402
from convzoo.inference.predict import PredictJob, predict  # noqa: E402


def photo(tmp_path, shared: str | None) -> str:
    """A real photo from ../shared/data/imagenet-samples.tar when present, else a generated one."""
    tar = os.path.join(shared or "", "data", "imagenet-samples.tar")
    out = tmp_path / "photo.jpg"
    if shared and os.path.isfile(tar):
        with tarfile.open(tar) as t:
            member = next(m for m in t.getmembers() if m.name.endswith(".JPEG"))
            out.write_bytes(t.extractfile(member).read())
    else:
        yy, xx = np.mgrid[0:240, 0:320]
        rgb = np.stack([xx * 255 // 320, yy * 255 // 240, (xx + yy) % 256], -1).astype(np.uint8)
        Image.fromarray(rgb).save(out, "JPEG")
    return str(out)


@pytest.fixture
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def save_screenshot(driver, tmp_path, name: str, width: int) -> str:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(height + 120, 600), 4000))
    driver.execute_script("window.scrollTo(0, 0)")
    path = tmp_path / name
    driver.save_screenshot(str(path))
    if os.environ.get("CONVZOO_ARTIFACTS"):
        os.makedirs(os.environ["CONVZOO_ARTIFACTS"], exist_ok=True)
        shutil.copy(path, os.environ["CONVZOO_ARTIFACTS"])
    return str(path)


def upload_and_read(driver, image: str, model_id: str, n_done: int) -> dict:
    Select(driver.find_element(By.ID, "model")).select_by_value(model_id)
    driver.find_element(By.ID, "files").send_keys(image)
    wait = WebDriverWait(driver, 60)
    finished = ".card[data-state=done], .card[data-state=error]"
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, finished)) >= n_done)
    card = driver.find_elements(By.CSS_SELECTOR, ".card")[0]  # the newest card is first
    assert card.get_attribute("data-state") == "done", card.text
    wait.until(lambda d: d.execute_script("return arguments[0].querySelector('.cam').naturalWidth", card) > 0)
    rows = card.find_elements(By.CSS_SELECTOR, "ol.top li")
    status = card.find_element(By.CSS_SELECTOR, ".status").text
    io = card.find_element(By.CSS_SELECTOR, ".io")
    return {
        "predictions": [
            {
                "label": li.get_attribute("data-label"),
                "index": int(li.get_attribute("data-index")),
                "probability": float(li.get_attribute("data-probability")),
                "text": li.text,
            }
            for li in rows
        ],
        "io": io.get_attribute("data-vote") if io.is_displayed() else None,
        "status": status,
    }


@pytest.mark.slow
def test_page_shows_predicts_top5_in_a_real_browser(browser, tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("browser")
    shared = os.environ.get("CONVZOO_SHARED") or str(request.config.rootpath.parent / "shared")
    image = photo(tmp, shared if os.path.isdir(shared) else None)
    with _serve_models.registered():
        weights = _serve_models.make_weights(tmp / "cifar10_tiny.safetensors")
        places = _serve_models.make_weights(tmp / "places365_tiny.safetensors", places=True, seed=1)
        (tmp / "run3").mkdir()
        three = _serve_models.make_weights(
            tmp / "run3" / "best.safetensors", seed=2, labels=["ant", "bee", "cow"]
        )
        expected = {
            m: predict(PredictJob(_serve_models.NAME, w, (image,), topk=5))[0]
            for m, w in (
                ("serve_test:cifar10_tiny", weights),
                ("serve_test:places365_tiny", places),
                ("serve_test:run3", three),  # a run's best.safetensors: named by its folder
            )
        }
    port = _serve_models.free_port()
    models = [weights, places, three]
    args = [_serve_models.NAME, "--weights", weights]
    for w in models[1:]:
        args += ["--model", _serve_models.NAME, "--weights", w]
    server = _serve_models.start_server(args, port)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) > 1)
        for n, (model_id, want) in enumerate(expected.items(), 1):
            shown = upload_and_read(browser, image, model_id, n)
            assert [p["label"] for p in shown["predictions"]] == [p["label"] for p in want["predictions"]]
            assert [p["index"] for p in shown["predictions"]] == [p["index"] for p in want["predictions"]]
            np.testing.assert_allclose(
                [p["probability"] for p in shown["predictions"]],
                [p["probability"] for p in want["predictions"]],
                rtol=1e-5,
                atol=1e-7,
            )
            for p, w in zip(shown["predictions"], want["predictions"]):  # what a person reads
                assert p["text"].startswith(w["label"]) and f"{w['probability'] * 100:.2f} %" in p["text"]
            assert shown["io"] == want.get("indoor_outdoor", {}).get("vote")
            k, classes = (
                len(want["predictions"]),
                3 if model_id.endswith("run3") else (365 if "places" in model_id else 10),
            )
            assert shown["status"].startswith(f"top-{k} of {classes} classes"), shown["status"]
            if model_id == "serve_test:places365_tiny":
                assert shown["io"] in ("indoor", "outdoor")  # the Places weights got a verdict
        assert k == 3  # the 3-class model: top-3, never "top-5" above 3 rows
        assert "All 3 classes ranked" in browser.find_element(By.ID, "topk-hint").text
        # the model's per-layer summary and the accuracy-vs-cost chart
        browser.find_element(By.CSS_SELECTOR, "details:not([open]) summary").click()
        rows = "#summary tbody tr"
        WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) > 2)
        chart_width = "return document.getElementById('chart').naturalWidth"
        WebDriverWait(browser, 180).until(lambda d: d.execute_script(chart_width) > 0)
        assert "not on the chart" in browser.find_element(By.ID, "chart-note").text
        save_screenshot(browser, tmp, "serve_page.png", 1280)
        # readable on a phone: nothing wider than the screen
        browser.set_window_size(390, 900)
        widths = browser.execute_script(
            "const e = document.documentElement; return [e.scrollWidth, e.clientWidth]"
        )
        assert widths[0] <= widths[1], f"page {widths[0]} px wide on a {widths[1]} px screen"
        # the model menu fits the screen, and the chart keeps a legible size (it scrolls sideways)
        menu = browser.execute_script("return document.getElementById('model').getBoundingClientRect().right")
        assert menu <= widths[1], f"model menu ends at {menu} px on a {widths[1]} px screen"
        chart = browser.execute_script(
            "return document.getElementById('chart').getBoundingClientRect().width"
        )
        assert chart >= 600, f"chart drawn {chart} px wide on a phone: its labels cannot be read"
        save_screenshot(browser, tmp, "serve_page_phone.png", 390)
        logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not logs, logs
    finally:
        server.terminate()
        assert server.wait(60) == 0
