"""The viewer as files that open from disk (file://), where browsers refuse ``fetch()``.

The page always loads ``data.js``, which sets ``window.SUMMIT_FAST_DATA``: where the data folder is
(``base``, relative to the page) and, for a copy opened from disk, the JSON files themselves
(``files``, by path relative to the data folder). Images are plain ``<img>`` loads, which browsers
allow from disk, so they stay in the data folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from . import STATIC_DIR
from .index import INDEX_FILE, check_index, graph_files, index_files


def data_script(base: str, files: dict | None = None) -> bytes:
    """The text of ``data.js``. ``files`` maps paths to decoded JSON values: they are encoded again
    here rather than pasted, so a data file that is not JSON can never become script."""
    return b"window.SUMMIT_FAST_DATA = " + json.dumps({"base": base, "files": files}).encode() + b";\n"


def write_standalone(data_dir: Path, dest: Path, class_names: list[str] | None = None, progress: bool = False) -> Path:
    """Copy the viewer into ``dest`` with a ``data.js`` holding every JSON file of ``data_dir``;
    returns the page to open. The data folder is referred to by a relative path, so the two can move
    together. The copy is a snapshot: write it again after re-exporting. ``progress``: report
    building the index of a folder of graphs alone on stderr."""
    data_dir, dest = Path(data_dir).resolve(), Path(dest).resolve()
    files = {name: json.loads(body) for name, body in index_files(data_dir, class_names, progress).items()}
    if INDEX_FILE not in files:
        files[INDEX_FILE] = json.loads((data_dir / INDEX_FILE).read_bytes())
    index = files[INDEX_FILE]
    check_index(index)
    if index["classes"] not in files:
        files[index["classes"]] = json.loads((data_dir / index["classes"]).read_bytes())
    for name in graph_files(index, files[index["classes"]]):  # by target_class, or by row in version 1
        if name not in files:
            files[name] = json.loads((data_dir / name).read_bytes())

    shutil.copytree(STATIC_DIR, dest, dirs_exist_ok=True)
    base = Path(os.path.relpath(data_dir, dest)).as_posix() + "/"
    (dest / "data.js").write_bytes(data_script(base, files))
    return dest / "index.html"
