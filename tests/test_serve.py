"""`vfmtok serve`: the request handlers called directly, then over real HTTP on 127.0.0.1."""

import base64
import io
import re
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from vfmtok.export import export_pair
from vfmtok.serve import ServeApp, make_server, upload_field

BOUNDARY = "----vfmtoktest"


@pytest.fixture(scope="module")
def app(tiny_pair, tmp_path_factory):
    bundle = export_pair(tiny_pair / "gpt", tmp_path_factory.mktemp("serve") / "bundle")
    return ServeApp(bundle, max_upload=1 << 20)


def _png(w=40, h=30, seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _multipart(data: bytes, name: str = "image") -> tuple[str, bytes]:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x.png\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return f"multipart/form-data; boundary={BOUNDARY}", body


def _images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def _q(**kw):
    base = {"class": "golf ball", "seed": "0", "n": "3", "temperature": "1.0", "top_k": "0", "cfg": "1.0"}
    return {k: [v] for k, v in {**base, **kw}.items()}


def test_sample_by_class_name_is_seeded(app):
    status, page = app.sample(_q())
    assert status == 200 and "golf ball" in page and re.search(r"3 images in \d+\.\d\d s", page)
    (grid,) = _images(page)
    # 3 tiles of 32 px (+2 px padding) in one row, enlarged 3x
    assert grid.size == ((3 * 34 + 2) * 3, 34 * 3 + 6)
    again = _images(app.sample(_q())[1])[0]
    other = _images(app.sample(_q(seed="1"))[1])[0]
    assert np.array_equal(np.asarray(grid), np.asarray(again)) and not np.array_equal(np.asarray(grid), np.asarray(other))


def test_sample_with_a_jacobi_window(app):
    status, page = app.sample(_q(window="4"))
    assert status == 200 and "Jacobi window 4" in page and len(_images(page)) == 1


@pytest.mark.parametrize("field,value,message", [
    ("class", "zebra", "unknown class 'zebra'; known names: tench, golf ball, parachute"),
    ("n", "17", "number of images must be between 1 and 16"),
    ("seed", "abc", "seed must be a whole number"),
    ("temperature", "nan", "temperature must be between"),
    ("cfg", "25", "CFG scale must be between 0 and 20"),
    ("power", "x", "CFG power must be a number"),
    ("window", "-1", "Jacobi window must be between 0 and"),
])
def test_bad_sample_input_gets_a_message(app, field, value, message):
    status, page = app.sample(_q(**{field: value}))
    assert status == 400 and message.replace("'", "&#x27;") in page and "Traceback" not in page
    assert not _images(page)


def test_reconstruct_shows_ids_and_regions(app):
    status, page = app.reconstruct(*_multipart(_png()))
    assert status == 200
    cells = re.findall(r"<td>(\d+)</td>", page[page.index("id='ids'"):])
    n = app.tok.num_tokens
    assert len(cells) == n and all(0 <= int(c) < app.tok.codebook_size for c in cells)
    pair, regions = _images(page)
    assert pair.size == ((2 * 34 + 2) * 4, 34 * 4 + 8) and regions.size == (128, 128)  # 32 px x scale 4


@pytest.mark.parametrize("payload,message", [
    (b"not an image at all", "is not an image"),
    (b"", "no file chosen"),
])
def test_bad_upload_gets_a_message(app, payload, message):
    status, page = app.reconstruct(*_multipart(payload))
    assert status == 400 and message in page


def test_upload_field_needs_multipart():
    with pytest.raises(Exception, match="multipart/form-data"):
        upload_field("application/json", b"{}", "image")


@pytest.fixture(scope="module")
def server(app):
    srv = make_server(app, "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _open(req):
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_http_round_trip_and_limits(server, app):
    assert server.startswith("http://127.0.0.1:")
    status, page = _open(server + "/")
    assert status == 200 and "id='sample'" in page and "id='upload'" in page
    status, page = _open(server + "/sample?class=tench&n=2&seed=3&temperature=1&top_k=5&cfg=1.5")
    assert status == 200 and "2 images in" in page
    status, page = _open(server + "/nowhere")
    assert status == 404 and "no page at /nowhere" in page
    ctype, body = _multipart(_png())
    status, page = _open(urllib.request.Request(server + "/reconstruct", data=body, headers={"Content-Type": ctype}))
    assert status == 200 and "Token ids" in page
    big = _multipart(b"x" * (app.max_upload + 1))
    status, page = _open(urllib.request.Request(server + "/reconstruct", data=big[1], headers={"Content-Type": big[0]}))
    assert status == 413 and "too large" in page and "at most 1 MB" in page
