"""The studio page ('productstudio web') driven in Debian's headless Chromium by Selenium, against real served models:
a canary (two TorchServe behind nginx, from a sqlite registry) for generation and the models view, and a TorchServe
serving the edit task. Generates, regenerates and downloads images; uploads a noisy photo with hostile files, edits
it, downloads the ZIP; rolls the canary back. Screenshots go to the test's folder (and to $STUDIO_SCREENSHOTS)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from productstudio.config import load_params, section_dict
from productstudio.deploy import local_canary as deploy
from productstudio.models.pretrained import weights_root
from productstudio.serving import server
from productstudio.serving.archive import build_archive
from productstudio.serving.server import free_ports
from tests.conftest import REPO_ROOT
from tests.integration.hostile import png_bytes
from tests.integration.photo_client import start_served
from tests.integration.team_services import canary_params, two_generator_registry
from tests.integration.test_deploy_canary import CATEGORIES, NAME, tiny_generator
from tests.integration.test_serving_edit import LOOK, restorer_dir  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow
WAIT_S = 240  # generous: three TorchServe and a browser share 2 cores


@pytest.fixture(scope="module")
def services(tmp_path_factory, restorer_dir):  # noqa: F811
    """Registry v1 (champion) and v2 (challenger) with metrics and a decision, canary at 30 %, the edit task."""
    for script in ("install-nginx", "install-chromium"):
        subprocess.run(["bash", str(REPO_ROOT / "scripts" / script)], check=True, timeout=900, stdout=subprocess.DEVNULL)
    root = tmp_path_factory.mktemp("studio")
    client, mp = two_generator_registry(root, NAME, {"1": tiny_generator(), "2": tiny_generator()}, CATEGORIES)
    for version in ("1", "2"):
        for key, value in {"metrics.fid": f"{40.0 - int(version):.1f}", "metrics.kid": "0.031",
                           "metrics.protocol": json.dumps({"fid": {"num_real": 1000, "feature_network": "inception-v3"}})}.items():
            client.set_model_version_tag(NAME, version, key, value)
    for key, value in {"promotion.decision": "promoted", "promotion.reason": "first champion: no champion to beat",
                       "promotion.decided_at": "2026-12-01T10:00:00Z"}.items():
        client.set_model_version_tag(NAME, "1", key, value)

    params = canary_params(load_params(REPO_ROOT / "params.yaml"), free_ports(11))
    canary_state, edit_state = root / "deploy", root / "edit"
    edit = params.edit
    mar = build_archive(weights_root(), root / "store", "studio-edit", task="edit",
                        provenance={"edit": section_dict(edit), "look": LOOK},
                        extra=(restorer_dir / "restorer.safetensors", restorer_dir / "restorer.json"))
    try:
        record = deploy.start_canary(params, canary_state, percent=30, wait_s=400)
        start_served(mar, edit_state, edit.max_upload_bytes + 1024)
        yield {"root": root, "client": client, "record": record, "canary": canary_state, "edit": edit_state,
               "max_upload_bytes": edit.max_upload_bytes}
    finally:
        deploy.stop_canary(canary_state)
        server.stop(edit_state)
        mp.undo()


@pytest.fixture(scope="module")
def page(services):
    """'productstudio web' as a user starts it; yields its login URL."""
    root = services["root"]
    port = free_ports(1)[0]
    log = open(root / "web.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "productstudio.cli", "web", "--port", str(port), "--canary-state", str(services["canary"]),
         "--edit-state", str(services["edit"]), "--generate-state", str(root / "no-generator"),
         "--scratch", str(root / "web")],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + WAIT_S
        url = None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            log.seek(0)
            url = next((line.split(": ", 1)[1].strip() for line in log if line.startswith("Product Studio page: ")), None)
        assert url, f"the page did not start: {(root / 'web.log').read_text()[-2000:]}"
        base = url.split("/login")[0]
        _wait_for(lambda: _status(f"{base}/api/info") == 401, "the page answering")
        yield {"url": url, "base": base, "token": (root / "web" / "token").read_text().strip(), "process": process}
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def browser(page, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.implicitly_wait(0)
    try:
        driver.get(page["url"])  # /login sets the token cookie and sends the browser to the page
        yield {"driver": driver, "downloads": downloads, "shots": tmp_path_factory.mktemp("screenshots")}
    finally:
        driver.quit()


def _status(url: str, headers: dict | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _wait_for(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _wait(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser["driver"], WAIT_S, poll_frequency=0.5).until(lambda d: condition(d))
    except Exception as error:
        shot = browser["shots"] / "failure.png"
        browser["driver"].save_screenshot(str(shot))
        error_text = browser["driver"].find_element("id", "page-error").text
        raise AssertionError(f"timed out waiting for {what} (page error: {error_text!r}; screenshot {shot})") from error


def _screenshot(browser, name: str) -> None:
    path = browser["shots"] / name
    browser["driver"].save_screenshot(str(path))
    if os.environ.get("STUDIO_SCREENSHOTS"):
        Path(os.environ["STUDIO_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(os.environ["STUDIO_SCREENSHOTS"]) / name)


def _downloaded_zip(browser, prefix: str) -> zipfile.ZipFile:
    def done():
        found = [p for p in browser["downloads"].glob(f"{prefix}*.zip")]
        return found[0] if found and not list(browser["downloads"].glob("*.crdownload")) else None
    path = _wait(browser, lambda _d: done(), f"the {prefix} ZIP download")
    return zipfile.ZipFile(io.BytesIO(path.read_bytes()))


def _images_loaded(driver, selector: str, count: int) -> bool:
    return driver.execute_script(
        "const imgs = document.querySelectorAll(arguments[0]);"
        "return imgs.length === arguments[1] && Array.from(imgs).every(i => i.complete && i.naturalWidth > 0);",
        selector, count)


def test_without_the_token_nothing_is_served(page):
    assert _status(page["base"] + "/") == 401
    assert _status(page["base"] + "/api/models") == 401
    assert _status(page["base"] + "/api/info", {"Authorization": "Bearer wrong"}) == 401
    assert _status(page["base"] + "/api/info", {"Authorization": f"Bearer {page['token']}"}) == 200


def test_generate_regenerate_and_download(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser["driver"]
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#category option")) == len(CATEGORIES), "categories")
    Select(driver.find_element(By.ID, "category")).select_by_visible_text("item3")
    for field, value in (("count", "4"), ("seed", "11")):
        driver.find_element(By.ID, field).clear()
        driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.ID, "generate-button").click()
    _wait(browser, lambda d: _images_loaded(d, "#grid .tile img", 4), "4 generated images")
    seeds = [t.get_attribute("data-seed") for t in driver.find_elements(By.CSS_SELECTOR, "#grid .tile")]
    assert seeds == ["11", "12", "13", "14"]
    status = driver.find_element(By.ID, "generate-status").text
    assert "4 × item3" in status and "version" in status and "canary proxy" in status, status

    driver.find_element(By.CSS_SELECTOR, "#grid .tile[data-index='0'] .regenerate").click()
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#grid .tile[data-index='0']").get_attribute("data-seed") != "11",
          "image 0 regenerated")
    _wait(browser, lambda d: _images_loaded(d, "#grid .tile img", 4), "the new image")
    new_seed = driver.find_element(By.CSS_SELECTOR, "#grid .tile[data-index='0']").get_attribute("data-seed")
    _screenshot(browser, "studio-generate.png")

    driver.find_element(By.CSS_SELECTOR, "#grid .tile[data-index='1'] a").click()  # one image
    one = _wait(browser, lambda _d: next(iter(browser["downloads"].glob("item3-seed12.png")), None), "one image's download")
    assert Image.open(one).size == (28, 28)

    driver.find_element(By.ID, "generate-zip").click()
    with _downloaded_zip(browser, "product-studio-generate") as archive:
        names = sorted(archive.namelist())
        assert names == sorted(["generation.json"] + [f"item3-seed{s}.png" for s in (new_seed, "12", "13", "14")])
        assert Image.open(io.BytesIO(archive.read(f"item3-seed{new_seed}.png"))).size == (28, 28)
        assert [i["seed"] for i in json.loads(archive.read("generation.json"))["items"]] == [int(new_seed), 12, 13, 14]


@pytest.fixture(scope="module")
def uploads(clothing_dir, tmp_path_factory):
    """A noisy product photo and four files the page must refuse, each with its expected reason."""
    root = tmp_path_factory.mktemp("uploads")
    photo = np.asarray(Image.open(sorted((clothing_dir / "test" / "t-shirt").glob("*.jpg"))[0]).convert("RGB"))
    noisy = np.clip(photo + np.random.default_rng(0).normal(0, 15, photo.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(root / "noisy shirt.jpg", quality=92)
    (root / "notes.jpg").write_bytes(b"this is a text file with a .jpg name\n")
    (root / "bomb.png").write_bytes(png_bytes(100_000, 100_000))
    Image.fromarray(photo[:64, :64]).save(root / "animation.gif")
    with open(root / "huge.jpg", "wb") as big:  # 40 MB: refused in the browser, never sent
        big.truncate(40_000_000)
    return root, {"noisy shirt.jpg": None, "notes.jpg": "not an image", "bomb.png": "decompression bomb",
                  "animation.gif": "unsupported image type GIF", "huge.jpg": "over the limit"}


def test_edit_photos_with_hostile_files_and_download_the_zip(browser, uploads, services):
    from selenium.webdriver.common.by import By

    driver = browser["driver"]
    folder, expected = uploads
    before = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in expected}
    driver.find_element(By.ID, "tab-edit").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "input[name=preset]"), "the served edit task's options")
    driver.find_element(By.ID, "files").send_keys("\n".join(str(folder / name) for name in expected))
    driver.find_element(By.CSS_SELECTOR, "input[name=step][value=watermark-removal]").click()
    driver.find_element(By.CSS_SELECTOR, "input[name=step][value=restore]").click()
    driver.find_element(By.CSS_SELECTOR, "input[name=restyle][value=look]").click()
    assert driver.find_element(By.CSS_SELECTOR, "input[name=restyle][value=paint]").get_attribute("disabled")  # not served
    for box in driver.find_elements(By.CSS_SELECTOR, "input[name=preset]"):
        if box.is_selected() != (box.get_attribute("value") in ("amazon-main", "transparent-png")):
            box.click()
    driver.find_element(By.ID, "edit-button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "edit-progress").get_attribute("value") == str(len(expected)),
          "every file handled")
    status = driver.find_element(By.ID, "edit-status").text
    assert status.startswith(f"{len(expected)} / {len(expected)} done, 4 refused"), status

    results = {r.get_attribute("data-name"): r for r in driver.find_elements(By.CSS_SELECTOR, "#results .result")}
    assert set(results) == set(expected)
    for name, phrase in expected.items():
        if phrase:
            assert phrase in results[name].find_element(By.CSS_SELECTOR, ".refusal").text, name
    shirt = results["noisy shirt.jpg"]
    _wait(browser, lambda d: _images_loaded(d, ".result[data-name='noisy shirt.jpg'] .compare img", 2), "before/after")
    verdicts = {p.get_attribute("data-preset"): p.text for p in shirt.find_elements(By.CSS_SELECTOR, ".export")}
    assert verdicts == {"amazon-main": "amazon-main passes", "transparent-png": "transparent-png passes"}
    assert "watermark-removal → restore → look" in shirt.text and "background_white" in shirt.get_attribute("textContent")
    slider = shirt.find_element(By.CSS_SELECTOR, ".compare input")
    driver.execute_script("arguments[0].value = 25; arguments[0].dispatchEvent(new Event('input'));", slider)
    assert "25%" in shirt.find_element(By.CSS_SELECTOR, ".compare .after").get_attribute("style")
    _screenshot(browser, "studio-edit.png")

    driver.find_element(By.ID, "edit-zip").click()
    with _downloaded_zip(browser, "product-studio-edit") as archive:
        assert sorted(archive.namelist()) == ["amazon-main/noisy-shirt.jpg", "report.json", "transparent-png/noisy-shirt.png"]
        exported = Image.open(io.BytesIO(archive.read("amazon-main/noisy-shirt.jpg")))
        assert exported.size == (1600, 1600)
        assert Image.open(io.BytesIO(archive.read("transparent-png/noisy-shirt.png"))).mode == "RGBA"
        report = json.loads(archive.read("report.json"))
    refused = {p["name"]: p["error"] for p in report["photos"] if p["error"]}
    assert set(refused) == {"notes.jpg", "bomb.png", "animation.gif"}  # huge.jpg never left the browser
    assert {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in expected} == before
    # the upload, as sent, was kept once: in its job folder under the page's scratch, nowhere else in the test's tree
    sent = (folder / "noisy shirt.jpg").read_bytes()
    copies = [p for p in services["root"].rglob("*") if p.is_file() and p.stat().st_size == len(sent)
              and p.read_bytes() == sent]
    assert [p.relative_to(services["root"]).parts[:2] for p in copies] == [("web", "jobs")], copies


def test_the_server_refuses_what_the_browser_did_not_stop(page, services):
    """A client that skips the page's own check gets 413 for a body over the limit, and the page keeps serving."""
    token = {"Authorization": f"Bearer {page['token']}"}
    request = urllib.request.Request(page["base"] + "/api/edit", data=json.dumps({"presets": "amazon-main"}).encode(),
                                     headers={**token, "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        job = json.loads(response.read())["job"]
    assert _status(f"{page['base']}/api/edit/{job}", {**token, "X-Filename": "big.jpg"},
                   b"\xff" * (services["max_upload_bytes"] + 1)) == 413
    assert _status(f"{page['base']}/api/edit/{job}", token, b"GIF89a not really") == 400
    assert _status(f"{page['base']}/api/jobs/{job}/files/..%2F..%2Ftoken", token) == 404
    assert _status(page["base"] + "/api/info", token) == 200


def test_models_view_and_canary_rollback(browser, services):
    from selenium.webdriver.common.by import By

    driver = browser["driver"]
    driver.find_element(By.ID, "tab-models").click()
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#versions tbody tr")) == 2, "the registry's versions")
    rows = {r.get_attribute("data-version"): r.text for r in driver.find_elements(By.CSS_SELECTOR, "#versions tbody tr")}
    assert "champion" in rows["1"] and "challenger" in rows["2"] and "fid 38.00" in rows["2"], rows
    assert "inception-v3" in rows["1"]
    assert "first champion" in driver.find_element(By.ID, "decision").text
    split = driver.find_element(By.ID, "canary-split").text
    assert split.startswith("30 % to the challenger v2"), split
    assert "healthy" in driver.find_element(By.CSS_SELECTOR, "#canary li[data-side='canary']").text
    _screenshot(browser, "studio-models.png")

    driver.find_element(By.ID, "rollback-button").click()
    driver.find_element(By.ID, "rollback-cancel").click()  # cancelling changes nothing
    time.sleep(1)
    assert deploy.load_deploy(services["canary"])["percent"] == 30
    driver.find_element(By.ID, "rollback-button").click()
    driver.find_element(By.ID, "rollback-confirm").click()
    _wait(browser, lambda d: d.find_element(By.ID, "canary-split").text.startswith("0 % to the challenger"), "the rollback")
    assert deploy.load_deploy(services["canary"])["percent"] == 0
    tags = services["client"].get_model_version(NAME, "2").tags
    assert tags[deploy.ROLLBACK_TAG].endswith("rolled back from the studio page")
    assert driver.find_element(By.ID, "rollback-button").get_attribute("disabled")


def test_the_page_starts_and_stops_the_torchserve_it_needs(tmp_path):
    """'productstudio web' with nothing served: it packages the registry's champion and the edit task, serves both,
    answers, and stops both when it is stopped (SIGINT, as Ctrl-C)."""
    import signal

    import yaml

    _, mp = two_generator_registry(tmp_path, NAME, {"1": tiny_generator(), "2": tiny_generator()}, CATEGORIES)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["serve"].update(zip(("inference_port", "management_port", "metrics_port", "grpc_inference_port",
                                "grpc_management_port"), free_ports(5)))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    generate_state, edit_state = tmp_path / "serve", tmp_path / "web" / "serve-edit"
    port = free_ports(1)[0]
    log = open(tmp_path / "web.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "productstudio.cli", "web", "--params", str(tmp_path / "params.yaml"), "--port", str(port),
         "--generate-state", str(generate_state), "--edit-state", str(edit_state), "--canary-state", str(tmp_path / "none"),
         "--scratch", str(tmp_path / "web")],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ})
    try:
        _wait_for(lambda: "Product Studio page: http://127.0.0.1:" in (tmp_path / "web.log").read_text()
                  or process.poll() is not None, "the page's URL")
        assert process.poll() is None, (tmp_path / "web.log").read_text()[-2000:]
        token = {"Authorization": f"Bearer {(tmp_path / 'web' / 'token').read_text().strip()}"}
        _wait_for(lambda: _status(f"http://127.0.0.1:{port}/api/info", token) == 200, "the page")
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/info", headers=token), timeout=60) as answer:
            info = json.loads(answer.read())
        assert info["generator"]["categories"] == CATEGORIES and "studio-edit" in info["editor"]["via"]
        assert server.status(generate_state)["running"] and server.status(edit_state)["running"]
        assert server.served_config(generate_state)  # the champion's archive, from the registry
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        log.close()
        mp.undo()
    output = (tmp_path / "web.log").read_text()
    assert process.returncode == 0, output[-2000:]
    assert "stopped TorchServe from" in output
    assert not server.status(generate_state)["running"] and not server.status(edit_state)["running"]
