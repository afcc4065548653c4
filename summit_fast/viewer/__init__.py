"""The interactive viewer: a static web page (``static/``, plain HTML/CSS/JS, d3 vendored) and the
small local server behind ``summit-fast view``.

The page reads an exported folder (``summit_fast.json``, ``classes.json``, ``ag/ag-{c}.json``). For a
folder holding only Summit's released graphs, :mod:`summit_fast.viewer.index` builds the first two
on the fly.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
