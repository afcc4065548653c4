"""A small local web server for the viewer: 127.0.0.1 only, read-only, no directory listings.

URL layout:
- ``/`` and everything else: the static page (``summit_fast/viewer/static``);
- ``/data.js``: tells the page where its data is (``data/``);
- ``/data/...``: the data folder, with ``summit_fast.json`` and ``classes.json`` built on the fly
  where the folder has only Summit's graphs (see :mod:`summit_fast.viewer.index`).

Requests whose Host header names anything but this server's loopback address are refused, so a web
page elsewhere cannot read the data through DNS rebinding. A file is served only where its resolved
path (links followed, ``..`` applied) lies inside its folder; a malformed path is answered 400.
"""

from __future__ import annotations

import io
import os
import re
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from . import STATIC_DIR
from .index import index_files
from .standalone import data_script

HOST = "127.0.0.1"
DATA_PREFIX = "/data/"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

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
        route = _decoded_path(self.path)
        if route is None:
            self.send_error(HTTPStatus.BAD_REQUEST, "malformed path")
            return None
        generated = self.server.generated.get(route)
        if generated is not None:
            body, content_type = generated
            return self._send_ok(io.BytesIO(body), content_type, len(body))
        file = self._open(route)
        if file is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        return self._send_ok(file, self.guess_type(file.name), os.fstat(file.fileno()).st_size)

    def _open(self, route: str):
        """The file a decoded URL path names, open: under /data/, in the data folder; else in the
        static folder ("/" is its index.html). None unless it is a readable file whose resolved path
        lies inside that folder: a link pointing out of it is not followed, nor '..' out of it, and
        a folder is not listed."""
        if route.startswith(DATA_PREFIX):
            root, relative = self.server.data_dir, route[len(DATA_PREFIX):]
        else:
            root, relative = STATIC_DIR, route[1:] or "index.html"
        real = Path(os.path.realpath(root / relative.lstrip("/")))
        if not (real.is_relative_to(root) and os.path.isfile(real)):  # (Path.is_file raises on too long a name)
            return None
        try:
            return open(real, "rb")
        except OSError:  # unreadable
            return None

    def _send_ok(self, body, content_type: str, length: int):
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        return body

    def end_headers(self):
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format, *args):
        # Quiet: the page asks for every node's picture, and a graph's layers without pictures
        # answer 404 by design (Summit's data has them for mixed4d only). The page reports real
        # failures itself.
        pass


def _decoded_path(target: str) -> str | None:
    """The path of a request target, percent-decoded; None where it is malformed: not a path, not
    ASCII, a bad escape, escapes that are not UTF-8, or control characters (a NUL byte cannot name
    a file)."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/") or not path.isascii() or _BAD_ESCAPE.search(path):
        return None
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    return None if any(ord(ch) < 32 or ord(ch) == 127 for ch in decoded) else decoded


def make_server(data_dir: Path, port: int = 0, class_names: list[str] | None = None,
                progress: bool = False) -> ViewerServer:
    """A viewer server for ``data_dir`` on 127.0.0.1 (``port=0``: any free port; see ``.url``).
    ``progress``: report building the index of a folder of graphs alone on stderr."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir} is not a folder")
    generated = {"/data.js": (data_script(DATA_PREFIX.lstrip("/")), "text/javascript; charset=utf-8")}
    for name, body in index_files(data_dir, class_names, progress).items():
        generated[DATA_PREFIX + name] = (body, "application/json")
    try:
        return ViewerServer(data_dir, port, generated)
    except OSError as exc:
        raise OSError(f"cannot listen on {HOST}:{port} ({exc.strerror}); choose another --port, or 0 for any free one") from exc
