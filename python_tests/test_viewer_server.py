"""``summit-fast view`` against hostile or mistaken input: requests that try to leave the served
folders or are malformed, Summit graph files that are not what they claim, a ``summit-fast run``
output folder given for its viewer/ folder, and what the command says while it starts.

Servers run on 127.0.0.1 on a free port, in a thread of the test or as the command itself.
"""

from __future__ import annotations

import json
import math
import queue
import re
import shutil
import socket
import threading

import pytest

from summit_fast.viewer import STATIC_DIR, server
from summit_fast.viewer.index import build_index, check_graph

from cli_command import run_cli, start_cli
from test_viewer import (LAYERS, NAMES, SUMMIT_DATA, export_dir, get, serve,  # noqa: F401 (export_dir, serve: fixtures)
                         write_export, write_graphs_only)

URL = re.compile(r"http://127\.0\.0\.1:\d+/")


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


def wait_for_url(process, timeout: float = 180) -> str:
    """The address `summit-fast view` prints once it serves (read in a thread, so that a command
    that hangs or exits fails the test with its error output instead of blocking it)."""
    lines = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=read, daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = None
    url = URL.search(line or "")
    if url is None:
        process.kill()
        pytest.fail(f"no address from summit-fast view: {line!r}; stderr: {process.stderr.read()}")
    return url.group(0)


def stop(process) -> str:
    """Stops a `summit-fast view` command; returns what it wrote on stderr."""
    process.terminate()
    process.wait(timeout=30)
    return process.stderr.read()


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


# ---------------------------------------------------------------------------------------------
# Summit graph files.

def _spoil_node(change):
    """A spoiler of a graph: ``change`` applied to its first conv2 node."""
    def spoil(graph: dict) -> dict:
        change(graph["conv2"][0])
        return graph
    return spoil


BAD_GRAPHS = {  # name: (a spoiler of a good graph, what the warning says)
    "negative channel": (_spoil_node(lambda n: n.update(channel=-5)),
                         r"conv2\[0\]\.channel: expected an integer 0\.\.16383, got -5;"),
    "huge channel": (_spoil_node(lambda n: n.update(channel=300_000_000)), r"conv2\[0\]\.channel: .* got 300000000;"),
    "float channel": (_spoil_node(lambda n: n.update(channel=3e8)), r"conv2\[0\]\.channel: .* got 300000000\.0;"),
    "boolean count": (_spoil_node(lambda n: n.update(count=True)), r"conv2\[0\]\.count: .* got true;"),
    "missing count": (_spoil_node(lambda n: n.pop("count")), r"conv2\[0\]\.count: .* got nothing \(missing\);"),
    "NaN pagerank": (_spoil_node(lambda n: n.update(pagerank=math.nan)),
                     r"conv2\[0\]\.pagerank: expected a non-negative number, got NaN;"),
    "negative influence": (_spoil_node(lambda n: n["attr_channels"][0].update(inf=-1)),
                           r"conv2\[0\]\.attr_channels\[0\]\.inf: .* got -1;"),
    "bad source": (_spoil_node(lambda n: n.update(prev_channels=[{"prev_channel": "x", "inf": 1}])),
                   r'conv2\[0\]\.prev_channels\[0\]\.prev_channel: .* got "x";'),
    "duplicate channel": (lambda g: {**g, "conv2": g["conv2"] + g["conv2"][:1]},
                          r"conv2\[\d+\]\.channel: channel \d+ appears twice in conv2;"),
    "nodes in an object": (lambda g: {**g, "conv2": {"0": g["conv2"][0]}}, r"conv2: expected a list of nodes, got a long dict;"),
    "node as a list": (lambda g: {**g, "conv2": g["conv2"] + [[1, 2]]}, r"conv2\[\d+\]: expected a node object, got \[1, 2\];"),
    "list for a graph": (lambda g: [1], r"ag-2\.json: expected an object of layers, got \[1\];"),
}


@pytest.mark.parametrize("case", BAD_GRAPHS)
def test_a_malformed_graph_file_is_named_and_skipped(tmp_path, case):
    spoil, message = BAD_GRAPHS[case]
    folder = write_graphs_only(tmp_path / "summit")
    path = folder / "ag" / "ag-2.json"
    path.write_text(json.dumps(spoil(json.loads(path.read_text()))))
    with pytest.warns(UserWarning) as warned:
        index, classes = build_index(folder, [f"n{c}" for c in range(len(NAMES))])
    assert len(warned) == 1 and str(warned[0].message).startswith(f"{path}: "), [str(w.message) for w in warned]
    assert re.search(message, str(warned[0].message)), str(warned[0].message)
    assert [cls["target_class"] for cls in classes] == [0, 1, 3, 4]   # the others load, by their numbers
    assert index["num_classes"] == 4 and index["class_names"] == ["n0", "n1", "n3", "n4"]


def test_real_and_exported_graphs_pass_the_check(export_dir):
    """The fixture's graphs, and Summit's 1000 where present."""
    for path in [*(export_dir / "ag").iterdir(), *(SUMMIT_DATA / "ag").glob("ag-*.json")]:
        check_graph(json.loads(path.read_text()))


def test_cli_names_each_bad_file_in_one_line_and_fails_in_one_line_when_none_is_usable(tmp_path):
    folder = write_graphs_only(tmp_path / "summit")
    (folder / "ag" / "ag-0.json").write_bytes(b"\x80\x81 not UTF-8")
    (folder / "ag" / "ag-1.json").write_text("[" * 100_000)
    for c in range(2, len(NAMES)):
        (folder / "ag" / f"ag-{c}.json").write_text(json.dumps({"conv1": [{"channel": -c, "count": 1}]}))
    result = run_cli("view", str(folder), "--static", str(tmp_path / "copy"), timeout=120)
    lines = [line for line in result.stderr.splitlines() if line and not line.startswith("reading ")]  # not the bar
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert [line.split(": ")[:2] for line in lines] == [
        ["summit-fast view", "warning"]] * len(NAMES) + [["summit-fast view", "error"]], result.stderr
    assert [str(folder / "ag" / f"ag-{c}.json") in lines[c] for c in range(len(NAMES))] == [True] * len(NAMES)
    assert lines[-1].endswith(f"none of the {len(NAMES)} graph files is usable (see the warnings)")
    assert not (tmp_path / "copy").exists()


# ---------------------------------------------------------------------------------------------
# What the command serves and says.

def test_cli_view_of_a_run_output_folder_serves_its_viewer(tmp_path):
    out = tmp_path / "run1"
    (out / "result").mkdir(parents=True)
    write_export(out / "viewer")
    process = start_cli("view", str(out), "--port", "0", "--no-browser")
    try:
        url = wait_for_url(process)
        assert get(url + "data/summit_fast.json")[2] == (out / "viewer" / "summit_fast.json").read_bytes()
    finally:
        stderr = stop(process)
    assert f"{out} is a `summit-fast run` output folder: viewing its {out / 'viewer'}" in stderr.splitlines()


def test_cli_view_says_what_it_does_while_it_starts(tmp_path):
    folder = write_graphs_only(tmp_path / "summit")
    process = start_cli("view", str(folder), "--port", "0", "--no-browser")
    try:
        url = wait_for_url(process)
        assert len(json.loads(get(url + "data/classes.json")[2])) == len(NAMES)
    finally:
        stderr = stop(process)
    assert f"reading {len(NAMES)} graphs: 100%" in stderr and f"{len(NAMES)}/{len(NAMES)} " in stderr, stderr
    assert f"placing {len(NAMES)} classes on the map ({len(LAYERS)} layers) ..." in stderr.splitlines(), stderr
