"""`vfmtok serve` in a real browser: headless Chromium driven by chromedriver over the W3C WebDriver protocol.

The client is a few JSON-over-HTTP calls (urllib), so no selenium dependency. Skipped, with the reason, where
Debian's `chromium` / `chromium-driver` are not installed. Environment (optional): VFMTOK_SERVE_MODEL (model folder
to serve instead of the tiny random one) and VFMTOK_SCREENSHOT_DIR (where serve.png / serve_upload.png go).
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import vfmtok
from vfmtok.export import export_pair
from vfmtok.serve import ServeApp, make_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="headless browser test needs Debian's chromium and chromium-driver "
                                       "(apt-get install chromium chromium-driver)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1100,900"]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


class WebDriver:
    """The handful of W3C WebDriver commands the test needs, over urllib."""

    def __init__(self, port: int, profile: str):
        self.base = f"http://127.0.0.1:{port}"
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM, "args": FLAGS + [f"--user-data-dir={profile}"]}}}}
        self.sid = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["value"]

    def cmd(self, method: str, path: str, body: dict | None = None):
        """A command of this session."""
        return self._call(method, f"/session/{self.sid}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def find(self, css: str, timeout: float = 60.0) -> str:
        """The element id of the first match, waiting for it to appear."""
        end = time.time() + timeout
        while True:
            found = self.cmd("POST", "/elements", {"using": "css selector", "value": css})
            if found:
                return found[0][ELEMENT]
            if time.time() > end:
                raise AssertionError(f"no element {css} within {timeout} s")
            time.sleep(0.2)

    def text(self, css: str) -> str:
        return self.cmd("GET", f"/element/{self.find(css)}/text")

    def type(self, css: str, value: str) -> None:
        el = self.find(css)
        self.cmd("POST", f"/element/{el}/clear", {})
        self.cmd("POST", f"/element/{el}/value", {"text": value})

    def click(self, css: str) -> None:
        self.cmd("POST", f"/element/{self.find(css)}/click", {})

    def submit(self, css: str, timeout: float = 120.0) -> None:
        """Click a form's button and wait for the next page: until then, finds would return the old page's
        elements, which go stale (chromedriver answers 404) when the new document replaces them."""
        old = self.find("html")
        self.click(css)
        end = time.time() + timeout
        while self.find("html") == old:
            if time.time() > end:
                raise AssertionError(f"no new page within {timeout} s after clicking {css}")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.cmd("GET", "/screenshot")))

    def quit(self) -> None:
        self.cmd("DELETE", "")


def _photo(folder: Path) -> Path:
    """A real photo: the first golf-ball image of the embedded Imagenette sample's val split."""
    import zipfile

    with zipfile.ZipFile(Path(vfmtok.__file__).parent / "assets" / "imagenette_sample.zip") as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith((".jpeg", ".jpg", ".png")))
        pick = next((n for n in names if "val" in n and "n03445777" in n), names[0])
        out = folder / ("photo" + Path(pick).suffix)
        out.write_bytes(z.read(pick))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tiny_pair, tmp_path_factory):
    model = os.environ.get("VFMTOK_SERVE_MODEL") or export_pair(tiny_pair / "gpt", tmp_path_factory.mktemp("b") / "m")
    app = ServeApp(model, max_upload=1 << 20)
    srv = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield app, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser():
    port = _free_port()
    proc = subprocess.Popen([DRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    profile = tempfile.mkdtemp(prefix="vfmtok-chromium-")
    try:
        for _ in range(100):  # wait for chromedriver to listen
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        wd = WebDriver(port, profile)
        yield wd
        wd.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def test_sample_upload_and_errors_in_a_browser(site, browser, tmp_path):
    app, url = site
    shots = Path(os.environ.get("VFMTOK_SCREENSHOT_DIR") or tmp_path)
    name = app.class_names[-1]
    browser.get(url + "/")
    browser.type("#class", name)
    browser.type("input[name=n]", "8")
    browser.submit("#go")
    took = browser.text("#took")
    assert took.startswith("8 images in ") and " s (seed 0" in took
    assert browser.text("#result h2") == name
    browser.screenshot(shots / "serve.png")

    picture = _photo(tmp_path)
    browser.cmd("POST", f"/element/{browser.find('#image')}/value", {"text": str(picture)})
    browser.submit("#send")
    ids = browser.text("#ids").split()
    assert len(ids) == app.tok.num_tokens and all(0 <= int(t) < app.tok.codebook_size for t in ids)
    browser.screenshot(shots / "serve_upload.png")

    browser.get(url + "/")
    browser.type("#class", "zebra")
    browser.submit("#go")
    assert browser.text("#error").startswith("unknown class 'zebra'; known names:")
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    browser.cmd("POST", f"/element/{browser.find('#image')}/value", {"text": str(bad)})
    browser.submit("#send")
    assert "not an image" in browser.text("#error")
    for shot in ("serve.png", "serve_upload.png"):
        assert Image.open(shots / shot).size[0] > 500  # a real rendering came back
