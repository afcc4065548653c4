"""A small local web server for the viewer: 127.0.0.1 only, read-only, no directory listings.

URL layout:
- ``/`` and everything else: the static page (``summit_fast/viewer/static``);
- ``/data.js``: tells the page where its data is (``data/``);
- ``/data/...``: the data folder, with ``summit_fast.json`` and ``classes.json`` built on the fly
  where the folder has only Summit's graphs (see :mod:`summit_fast.viewer.index`).

Requests whose Host header names anything but this server's loopback address are refused, so a web
page elsewhere cannot read the data through DNS rebinding.
"""

from __future__ import annotations

import io
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from . import STATIC_DIR
from .index import index_files
from .standalone import data_script

HOST = "127.0.0.1"
DATA_PREFIX = "/data/"

# The page inserts all data as text and loads scripts only from this server; the policy makes any
# slip (an injected inline handler, an external script) inert rather than exploitable.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ViewerServer(ThreadingHTTPServer):
    """Serves the viewer for one data folder. ``generated`` maps URL paths to (body, content type)."""

    daemon_threads = True

    def __init__(self, data_dir: Path, port: int, generated: dict[str, tuple[bytes, str]]):
        self.data_dir = Path(data_dir).resolve()
        self.generated = generated
        super().__init__((HOST, port), _Handler)
        self.allowed_hosts = {f"{HOST}:{self.server_port}", f"localhost:{self.server_port}"}

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_port}/"

    def start_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread (for tests and notebooks); stop with ``shutdown()``."""
        thread = threading.Thread(target=self.serve_forever, name="summit-fast-view", daemon=True)
        thread.start()
        return thread


class _Handler(SimpleHTTPRequestHandler):
    server: ViewerServer

    def send_head(self):
        if self.headers.get("Host") not in self.server.allowed_hosts:
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header")
            return None
        generated = self.server.generated.get(urlsplit(self.path).path)
        if generated is None:
            return super().send_head()
        body, content_type = generated
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def translate_path(self, path: str) -> str:
        # Route by prefix; the base class then drops '..' and other unsafe path segments.
        if urlsplit(path).path.startswith(DATA_PREFIX):
            self.directory = str(self.server.data_dir)
            path = path[len(DATA_PREFIX) - 1:]
        else:
            self.directory = str(STATIC_DIR)
        return super().translate_path(path)

    def list_directory(self, path):  # no listings: answer 404, with no body for send_head to copy
        self.send_error(HTTPStatus.NOT_FOUND)

    def end_headers(self):
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format, *args):
        # Quiet: the page asks for every node's picture, and a graph's layers without pictures
        # answer 404 by design (Summit's data has them for mixed4d only). The page reports real
        # failures itself.
        pass


def make_server(data_dir: Path, port: int = 0, class_names: list[str] | None = None) -> ViewerServer:
    """A viewer server for ``data_dir`` on 127.0.0.1 (``port=0``: any free port; see ``.url``)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir} is not a folder")
    generated = {"/data.js": (data_script(DATA_PREFIX.lstrip("/")), "text/javascript; charset=utf-8")}
    for name, body in index_files(data_dir, class_names).items():
        generated[DATA_PREFIX + name] = (body, "application/json")
    try:
        return ViewerServer(data_dir, port, generated)
    except OSError as exc:
        raise OSError(f"cannot listen on {HOST}:{port} ({exc.strerror}); choose another --port, or 0 for any free one") from exc
