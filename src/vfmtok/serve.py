"""`vfmtok serve`: a local web page to sample a model by class and to tokenize an uploaded image.

Served by the standard library (`http.server`): no extra dependency, nothing to download, and every request is
handled by plain functions (`ServeApp.sample`, `ServeApp.reconstruct`) that tests call directly. Pages are
rendered on the server (forms, no JavaScript), images inlined as PNG data URIs. Bad input gets a message on the
page (HTTP 400/404/413); an unexpected failure gets a one-line message (500) while the traceback goes to the log.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch
from PIL import Image

from vfmtok.figures import sampling_regions, upscale
from vfmtok.utils.errors import VFMTokError, require
from vfmtok.utils.images import make_grid, to_uint8
from vfmtok.utils.report import img_tag

log = logging.getLogger("vfmtok.serve")
MAX_IMAGES = 16
MAX_PIXELS = 40_000_000  # decoded size limit of an upload (a small file can still decode huge)
CSS = ("body{font-family:sans-serif;max-width:1000px;margin:20px auto;color:#222}form{border:1px solid #ccc;padding:10px;"
       "margin:10px 0}label{margin-right:12px}input[type=number]{width:70px}.error{background:#fde;border:1px solid #c33;"
       "padding:8px;color:#900}.ids td{font-family:monospace;font-size:11px;padding:1px 4px;border:1px solid #ddd}"
       ".row{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figcaption{font-size:12px}img{max-width:100%}")


class ServeApp:
    """The page's logic: a loaded tokenizer + GPT pair and the three views (index, sample, reconstruct)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_upload: int = 4 << 20):
        from vfmtok.generator.checkpoint import load_generator
        from vfmtok.tokenizer.api import load_tokenizer

        model_dir = Path(model_dir)
        require((model_dir / "generator").is_dir() and (model_dir / "tokenizer").is_dir(),
                f"{model_dir} is not an exported model folder (generator/ and tokenizer/); see `vfmtok export`")
        self.model_dir, self.max_upload = model_dir, max_upload
        self.tok = load_tokenizer(model_dir / "tokenizer", device=device)
        self.gpt = load_generator(model_dir / "generator", device=device)  # a GPT or a RAR
        n = self.gpt.config.num_classes
        self.class_names = list(self.gpt.class_names or [str(i) for i in range(n)])
        self.lock = threading.Lock()  # one model call at a time (the server has a thread per request)

    # ---------------------------------------------------------------------------------------------- pages
    def page(self, result: str = "", error: str | None = None, form: dict | None = None) -> str:
        """The whole page: both forms (keeping the user's values), then an error or the result."""
        temperature, top_k, _ = self.gpt.sampling_args()  # the model's recommended sampling, when it has one
        f = {"class": self.class_names[0], "seed": "0", "n": "4", "temperature": f"{temperature:g}", "top_k": str(top_k),
             "cfg": "1.0", "power": "", "window": "0", **(form or {})}
        v = {k: html.escape(str(x), quote=True) for k, x in f.items()}
        options = "".join(f"<option value='{html.escape(c, quote=True)}'>" for c in self.class_names)
        sample_form = (
            "<form id='sample' action='/sample' method='get'><b>Sample</b><br>"
            f"<label>class <input name='class' id='class' list='classes' value='{v['class']}'></label>"
            f"<datalist id='classes'>{options}</datalist>"
            f"<label>seed <input type='number' name='seed' value='{v['seed']}'></label>"
            f"<label>images <input type='number' name='n' min='1' max='{MAX_IMAGES}' value='{v['n']}'></label>"
            f"<label>temperature <input name='temperature' size='4' value='{v['temperature']}'></label>"
            f"<label>top-k <input type='number' name='top_k' min='0' value='{v['top_k']}'></label>"
            f"<label>CFG <input name='cfg' size='4' value='{v['cfg']}'></label>"
            f"<label>CFG power <input name='power' size='4' value='{v['power']}' title='RAR schedule; empty: constant'></label>"
            f"<label title='ids per forward pass, speculative Jacobi decoding (same distribution); 0 = one id per pass'>"
            f"Jacobi window <input type='number' name='window' min='0' size='3' value='{v['window']}'></label>"
            "<button type='submit' id='go'>sample</button></form>")
        upload_form = (
            "<form id='upload' action='/reconstruct' method='post' enctype='multipart/form-data'><b>Tokenize an image</b><br>"
            f"<input type='file' name='image' id='image' accept='image/*'> (at most {self.max_upload >> 20} MB) "
            "<button type='submit' id='send'>reconstruct</button></form>")
        err = f"<p class='error' id='error'>{html.escape(error)}</p>" if error else ""
        cfg = self.tok.model.cfg
        about = (f"<p>Model <code>{html.escape(str(self.model_dir))}</code>: {html.escape(cfg.arch)} tokenizer, "
                 f"{self.tok.num_tokens} tokens, codebook {self.tok.codebook_size}, {self.tok.image_size} px; "
                 f"classes: {html.escape(', '.join(self.class_names))}.</p>")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>vfmtok</title><style>{CSS}</style></head>"
                f"<body><h1>vfmtok</h1>{about}{sample_form}{upload_form}{err}<div id='result'>{result}</div></body></html>")

    def sample(self, query: dict[str, list[str]]) -> tuple[int, str]:
        """GET /sample?class=..&seed=..&n=..&temperature=..&top_k=..&cfg=..[&window=K] -> images and the time taken."""
        from vfmtok.generator.sample import generate_images, parse_labels

        form = {k: (query.get(k) or [""])[0] for k in ("class", "seed", "n", "temperature", "top_k", "cfg", "power", "window")}
        try:
            label = parse_labels([form["class"]], self.class_names, len(self.class_names))[0]
            seed = _number(form["seed"], int, "seed", 0, 2**31 - 1)
            n = _number(form["n"], int, "number of images", 1, MAX_IMAGES)
            temperature = _number(form["temperature"], float, "temperature", 0.05, 5.0)
            top_k = _number(form["top_k"], int, "top-k", 0, self.tok.codebook_size)
            cfg = _number(form["cfg"], float, "CFG scale", 0.0, 20.0)
            power = _number(form["power"], float, "CFG power", 0.0, 20.0) if form["power"].strip() else None
            window = _number(form["window"] or "0", int, "Jacobi window", 0, self.gpt.config.num_tokens)
        except VFMTokError as e:
            return 400, self.page(error=str(e), form=form)
        with self.lock:
            t0 = time.perf_counter()
            imgs = generate_images(self.gpt, self.tok, torch.full((n,), label), cfg_scale=cfg, cfg_power=power,
                                   temperature=temperature,
                                   top_k=top_k, top_p=self.gpt.sampling_args()[2], seed=seed, batch_size=MAX_IMAGES,
                                   parallel="jacobi" if window else "none", window=max(window, 1))
            took = time.perf_counter() - t0
        grid = upscale(make_grid(imgs, ncol=min(n, 4)), 3)
        name = html.escape(self.class_names[label])
        result = (f"<h2>{name}</h2><p id='took'>{n} image{'s' if n > 1 else ''} in {took:.2f} s "
                  f"(seed {seed}, temperature {temperature:g}, top-k {top_k}, CFG {cfg:g}"
                  f"{f', Jacobi window {window}' if window else ''})</p>"
                  f"{img_tag(grid, alt='samples of ' + self.class_names[label])}")
        return 200, self.page(result, form=form)

    def reconstruct(self, content_type: str, body: bytes) -> tuple[int, str]:
        """POST /reconstruct (multipart, field 'image') -> reconstruction, token ids, anchor sampling regions."""
        from vfmtok.data.imagefolder import center_crop_resize, to_tensor

        try:
            data = upload_field(content_type, body, "image")
            img = _open_upload(data)
        except VFMTokError as e:
            return 400, self.page(error=str(e))
        x = to_tensor(center_crop_resize(img, self.tok.image_size))
        with self.lock:
            t0 = time.perf_counter()
            with torch.no_grad():
                ids = self.tok.encode(x[None])
                rec = self.tok.decode(ids)
            regions = sampling_regions(self.tok, x)
            took = time.perf_counter() - t0
        pair = upscale(make_grid(np.concatenate([to_uint8(x[None]).numpy(), to_uint8(rec).numpy()]), ncol=2), 4)
        gh, gw = self.tok.token_grid
        grid = ids[0].reshape(gh, gw).tolist()
        table = "".join("<tr>" + "".join(f"<td>{t}</td>" for t in row) + "</tr>" for row in grid)
        figs = [f"<figure>{img_tag(pair, alt='original and reconstruction')}<figcaption>input ({self.tok.image_size} px) | "
                f"reconstruction from {ids.shape[1]} tokens</figcaption></figure>"]
        if regions is None:
            figs.append("<p>This tokenizer has no anchor queries (a VQGAN's tokens are a fixed grid of patches).</p>")
        else:
            figs.append(f"<figure>{img_tag(regions, width=256, alt='anchor sampling regions')}<figcaption>where six anchor "
                        "queries sample (cross = anchor, dots = sampling points, size ~ weight)</figcaption></figure>")
        result = (f"<h2>Tokenized in {took:.2f} s</h2><div class='row'>{''.join(figs)}</div>"
                  f"<h3>Token ids ({gh} x {gw})</h3><table class='ids' id='ids'>{table}</table>")
        return 200, self.page(result)


def _number(text: str, kind: type, what: str, lo: float, hi: float):
    """Parse one form field, or a one-line error naming the field and its range."""
    try:
        value = kind(text.strip())
    except ValueError:
        raise VFMTokError(f"{what} must be {'a whole number' if kind is int else 'a number'}, got '{text}'") from None
    if not lo <= value <= hi or value != value:
        raise VFMTokError(f"{what} must be between {lo:g} and {hi:g}, got {text}")
    return value


def upload_field(content_type: str, body: bytes, name: str) -> bytes:
    """The bytes of one file field of a multipart/form-data body (email's MIME parser; no cgi module)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise VFMTokError("the upload must be sent as multipart/form-data (use the page's form)")
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise VFMTokError("could not read the upload (malformed multipart body)")
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            data = part.get_payload(decode=True) or b""
            if not data:
                raise VFMTokError("no file chosen: pick an image to upload")
            return data
    raise VFMTokError("no file chosen: pick an image to upload")


def _open_upload(data: bytes) -> Image.Image:
    """Decode uploaded bytes as an RGB image, refusing non-images and oversized pictures."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
    except Exception:  # PIL raises several types for non-images
        raise VFMTokError("the uploaded file is not an image PIL can read (PNG, JPEG, WebP, ...)") from None
    if w * h > MAX_PIXELS:
        raise VFMTokError(f"the image is too large ({w} x {h} pixels; at most {MAX_PIXELS // 1_000_000} million)")
    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except Exception:
        raise VFMTokError("the uploaded image is damaged and could not be decoded") from None


def make_handler(app: ServeApp) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `app`."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "vfmtok"

        def _send(self, status: int, page: str) -> None:
            data = page.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _guarded(self, fn) -> None:
            try:
                self._send(*fn())
            except Exception as e:  # the page gets one line, the log the traceback
                log.exception("request %s failed", self.path)
                self._send(500, app.page(error=f"internal error ({type(e).__name__}); see the server log"))

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlsplit(self.path)
            if url.path == "/":
                self._guarded(lambda: (200, app.page()))
            elif url.path == "/sample":
                self._guarded(lambda: app.sample(parse_qs(url.query, keep_blank_values=True)))
            else:
                self._send(404, app.page(error=f"no page at {url.path}"))

        def do_POST(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != "/reconstruct":
                self._send(404, app.page(error=f"no page at {self.path}"))
                return
            try:
                length = int(self.headers.get("Content-Length", "-1"))
            except ValueError:
                length = -1
            if length < 0 or length > app.max_upload:
                self.close_connection = True
                if 0 < length <= 16 * app.max_upload:  # drained, so the browser sees the page, not a reset
                    while length > 0:
                        length -= len(self.rfile.read(min(length, 1 << 16))) or length
                    length = int(self.headers["Content-Length"])
                why = "the upload has no length" if length < 0 else f"the upload is too large ({length / 2**20:.1f} MB)"
                self._send(413 if length > 0 else 411, app.page(error=f"{why}; at most {app.max_upload >> 20} MB"))
                return
            body = self.rfile.read(length)
            self._guarded(lambda: app.reconstruct(self.headers.get("Content-Type", ""), body))

        def log_message(self, fmt: str, *args) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

    return Handler


def make_server(app: ServeApp, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server for `app`; port 0 picks a free one."""
    try:
        return ThreadingHTTPServer((host, port), make_handler(app))
    except OSError as e:
        raise VFMTokError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
