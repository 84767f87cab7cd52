"""The README's screenshots of the studio page, taken in Debian's headless Chromium from a running page:

    make web &                                   # prints http://127.0.0.1:8075/login?token=...
    .venv/bin/python scripts/studio-screenshots.py "$(cat .scratch/web/token)" docs/ PHOTO [PHOTO ...]

Generates 12 images of the first category (seed 1), edits the photos (restore when served, then the default
marketplace formats), and saves docs/studio-generate.png and docs/studio-edit.png.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("token")
    parser.add_argument("out", type=Path)
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:8075")
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    wait = WebDriverWait(driver, 600, poll_frequency=0.5)
    try:
        driver.get(f"{args.url}/login?token={args.token}")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#category option"))
        for field, value in (("count", "12"), ("seed", "1")):
            driver.find_element(By.ID, field).clear()
            driver.find_element(By.ID, field).send_keys(value)
        driver.find_element(By.ID, "generate-button").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .tile img")) == 12)
        args.out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out / "studio-generate.png"))

        driver.find_element(By.ID, "tab-edit").click()
        driver.find_element(By.ID, "files").send_keys("\n".join(str(p.resolve()) for p in args.photos))
        restore = driver.find_element(By.CSS_SELECTOR, "input[name=step][value=restore]")
        if restore.is_enabled():
            restore.click()
        driver.find_element(By.ID, "edit-button").click()
        wait.until(lambda d: d.find_element(By.ID, "edit-progress").get_attribute("value") == str(len(args.photos)))
        driver.execute_script("document.querySelector('#edit-button').scrollIntoView()")
        driver.save_screenshot(str(args.out / "studio-edit.png"))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
