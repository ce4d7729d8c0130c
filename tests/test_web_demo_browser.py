"""The web demo in a real headless Chromium (Debian's ``chromium``, driven by Playwright): the command
``scripts/web_demo.py`` serves the tiny model on a free loopback port; the browser uploads an image,
fills the fields, submits, and waits for the answer; then it submits bad input and reads the messages.

In the default suite (about 40 s on two busy cores). ``scripts/install_browser.sh`` (run by
``scripts/install_env.sh``, so by ``make test``) installs the browser.

A screenshot of the answered page goes to the test's output folder. ``WEB_DEMO_MODEL`` serves another
model, ``WEB_DEMO_MAX_NEW_TOKENS`` lets it write more than 24 tokens, and ``WEB_DEMO_SCREENSHOT``
also writes the screenshot there; the README's picture was made with

    WEB_DEMO_MODEL=outputs/demo/sft/final WEB_DEMO_MAX_NEW_TOKENS=400 \
        WEB_DEMO_SCREENSHOT=docs/images/web_demo.png pytest tests/test_web_demo_browser.py
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from rexthinker import web_demo
from rexthinker.inference import Referrer

ROOT = Path(__file__).resolve().parents[1]
MAX_NEW_TOKENS = int(os.environ.get("WEB_DEMO_MAX_NEW_TOKENS", 24))
TIMEOUT_MS = 300_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return os.environ.get("WEB_DEMO_MODEL") or str(tiny_model_path)


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    """``scripts/web_demo.py`` on a free loopback port; its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [sys.executable, "scripts/web_demo.py", "--model", model, "--port", str(port), "--max-new-tokens",
           str(MAX_NEW_TOKENS), "--examples", "2"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the web demo exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the web demo did not answer on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run bash scripts/install_browser.sh (scripts/install_env.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def _submit(page, image: Path | None, referring: str, boxes: str) -> None:
    if image is not None:
        page.locator("#image input[type=file]").set_input_files(str(image))
        page.locator("#image img").first.wait_for(timeout=TIMEOUT_MS)  # the upload's preview
    page.locator("#referring textarea").fill(referring)
    page.locator("#boxes textarea").fill(boxes)
    page.locator("#submit").click()


def _status(page, text: str) -> str:
    status = page.locator("#status")
    status.filter(has_text=text).wait_for(timeout=TIMEOUT_MS)
    return status.inner_text()


@pytest.fixture
def page(browser, tmp_path):
    """A fresh tab; what it shows at the end (a failure, say) is saved as ``page_at_end.png``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield page
    page.screenshot(path=str(tmp_path / "page_at_end.png"), full_page=True)
    page.close()


def test_the_page_answers_like_the_library_and_explains_bad_input(server, page, model, tmp_path):
    image_path, category, referring, boxes = web_demo.write_examples(tmp_path / "examples", count=1)[0]
    page.goto(server)
    page.locator("#header").filter(has_text="Rex-Thinker").wait_for(timeout=TIMEOUT_MS)
    assert "listens on" not in page.locator("#header").inner_text()  # loopback only: nothing to warn about

    _submit(page, Path(image_path), referring, boxes)
    status = _status(page, "tokens")  # the final line names the time and the token count
    picture = page.locator("#picture img")
    picture.wait_for(timeout=TIMEOUT_MS)
    width = page.evaluate("(img) => img.naturalWidth", picture.element_handle())
    trace = page.locator("#trace")
    assert trace.is_visible() and trace.inner_text().strip()
    shown = json.loads(page.locator("#answer .cm-content").inner_text())

    referrer = Referrer(model, "hf", max_new_tokens=MAX_NEW_TOKENS)
    library = referrer.refer(Image.open(image_path), category, referring, json.loads(boxes))
    assert {k: v for k, v in shown.items() if k != "seconds"} == web_demo.answer_record(library)
    assert width == web_demo.draw_result(library, Image.open(image_path)).width  # the annotated two-panel picture
    assert ("No match" in status) == library.is_rejection
    shot = tmp_path / "web_demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("WEB_DEMO_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["WEB_DEMO_SCREENSHOT"])

    _submit(page, None, referring, "[[1, 2, 3, 4]")
    assert "not valid JSON" in _status(page, "not valid JSON")
    _submit(page, None, " ", boxes)
    _status(page, "Type a referring expression")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is not an image")
    page.locator("#image input[type=file]").set_input_files(str(not_an_image))
    page.locator("#referring textarea").fill(referring)
    page.locator("#submit").click()
    _status(page, "notes.png is not an image")
    assert "Traceback" not in page.content()
