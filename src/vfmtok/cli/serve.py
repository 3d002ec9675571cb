"""`vfmtok serve`: a local web page to sample by class and tokenize an upload."""

from __future__ import annotations

import argparse
import logging

from vfmtok.cli import args as A
from vfmtok.serve import ServeApp, make_server
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import require


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok serve`."""
    p.add_argument("--model", default=None, help="exported model folder (default: the bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    A.add(p, "device")
    p.add_argument("--max-upload-mb", type=float, default=4.0, help="largest accepted upload")


def run(args: argparse.Namespace) -> int:
    """Load the model, bind, print the address, serve until Ctrl-C."""
    from vfmtok.generator.bundled import bundled_model_dir

    require(0 <= args.port <= 65535, f"--port must be 0..65535, got {args.port}")
    require(args.max_upload_mb > 0, "--max-upload-mb must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    app = ServeApp(args.model or bundled_model_dir(), resolve_device(args.device), int(args.max_upload_mb * 2**20))
    server = make_server(app, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"vfmtok serve: http://{host}:{port}/  (model {app.model_dir}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
