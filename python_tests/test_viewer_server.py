"""``summit-fast view`` against hostile or mistaken input: requests that try to leave the served
folders or are malformed, Summit graph files that are not what they claim, a ``summit-fast run``
output folder given for its viewer/ folder, and what the command says while it starts.

Servers run on 127.0.0.1 on a free port, in a thread of the test or as the command itself.
"""

from __future__ import annotations

import re
import shutil
import socket

from summit_fast.viewer import STATIC_DIR, server

from test_viewer import export_dir, get, serve, write_export  # noqa: F401 (export_dir, serve: fixtures)


def raw_status(url: str, target: bytes) -> int | None:
    """The status a viewer server answers to ``GET target`` sent byte for byte (no client-side
    quoting or normalisation); None when it closes the connection without an answer."""
    host = url.split("/")[2]
    with socket.create_connection(tuple(host.split(":")), timeout=30) as conn:
        conn.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(status.group(1)) if status else None


# ---------------------------------------------------------------------------------------------
# Requests.

def test_only_files_inside_the_served_folders_are_served(tmp_path, serve, monkeypatch):
    export = write_export(tmp_path / "export")
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET outside the served folder")
    (export / "x").symlink_to("/etc/passwd")
    (export / "secret-link").symlink_to(secret)
    (export / "outside").symlink_to(tmp_path)                       # a folder link out
    (export / "loop").symlink_to(export / "loop")
    (export / "ag" / "inside.json").symlink_to(export / "classes.json")   # a link within: fine
    url = serve(export)

    assert get(url + "data/ag/inside.json")[::2] == (200, (export / "classes.json").read_bytes())
    assert raw_status(url, b"/data/ag/../classes.json") == 200       # '..' that stays inside
    refused = [b"/data/x", b"/data/secret-link", b"/data/outside/secret.txt", b"/data/loop", b"/data/ag",
               b"/data/../secret.txt", b"/data/../../secret.txt", b"/data/%2e%2e/secret.txt",
               b"/data/..%2fsecret.txt", b"/data/%2e%2e%2fsecret.txt", b"/data/%2E%2E%2Fsecret.txt",
               b"/data/ag/..%2f..%2fsecret.txt", b"/data//etc/passwd", b"/data/%2fetc%2fpasswd",
               b"/..%2f..%2f..%2fetc%2fpasswd", b"/%2e%2e/%2e%2e/%2e%2e/etc/passwd", b"/js/"]
    for target in refused:
        status, _, body = get(url + target.decode().lstrip("/"))
        assert (status, raw_status(url, target)) == (404, 404), target
        assert b"SECRET" not in body and b"root:" not in body, target

    static = tmp_path / "static"   # the page's folder, with a link out of it
    shutil.copytree(STATIC_DIR, static)
    (static / "leak.txt").symlink_to(secret)
    monkeypatch.setattr(server, "STATIC_DIR", static.resolve())
    url = serve(export)
    assert get(url)[0] == 200 and get(url + "js/main.js")[2] == (STATIC_DIR / "js" / "main.js").read_bytes()
    assert get(url + "leak.txt")[0] == 404


def test_malformed_paths_are_answered_4xx_and_the_server_keeps_serving(export_dir, serve, capfd):
    url = serve(export_dir)
    odd = [b"/data/%00", b"/data/ag/ag-1.json%00.png", b"/data/a\x00b", b"/%00", b"/data/\x01",
           b"/data/%zz", b"/data/%", b"/data/%4", b"/data/%ff%fe", b"/data/%c3%28", b"/data/\xff\xfe",
           b"/data/" + b"a" * 60_000, b"/data/" + b"a/" * 20_000, b"*", b"http://127.0.0.1/data/x", b"data/x"]
    for target in odd:
        status = raw_status(url, target)
        assert status is not None and 400 <= status < 500, (target[:40], status)
        assert get(url + "data/summit_fast.json")[0] == 200, target[:40]   # still serving
    assert raw_status(url, b"/data/%00") == 400
    assert raw_status(url, b"/data/%ff") == 400
    assert "Traceback" not in capfd.readouterr().err
