"""Replace an output folder by a new version as a whole, so that neither a reader nor a process
killed at any moment leaves a mixture of two versions.

The new version is written into a hidden sibling ``.NAME.new-PID``. Once it is complete the
current folder is renamed to ``.NAME.old-PID``, the new one to ``NAME``, and the old one is
removed. A process killed between those two renames leaves no ``NAME`` but the old version
whole: :func:`recover` (which :func:`replacing` calls first) puts it back. Temporaries are named
``.STEM-PID``; those of processes no longer running are removed by the next process that
writes there. Two processes must not replace one folder at once: callers hold a lock
(:mod:`summit_fast._lock`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

_TEMPORARY = re.compile(r"\.(?P<stem>.+)-(?P<pid>[0-9]+)")
_NEW, _OLD = "new", "old"
_EARLIER_STAGING = "export"  # export()'s staging folder before this module, .NAME.export-PID


def temporary(folder: Path, stem: str) -> Path:
    """This process's temporary ``.STEM-PID`` in ``folder``."""
    return folder / f".{stem}-{os.getpid()}"


def remove_stale(folder: Path, stems: Collection[str]) -> None:
    """Remove the temporaries ``.STEM-PID`` in ``folder`` (STEM one of ``stems``) of processes
    that are no longer running."""
    for entry in _stale(folder, stems):
        remove(entry)


def remove(entry: Path) -> None:
    """Remove a folder, file or symbolic link (not what it points to); gone already is fine."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    if pid <= 0:  # os.kill(0, ...) would address this process group
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True


def recover(folder: Path) -> None:
    """Undo what a process killed while replacing ``folder`` left: put back the old version if it
    left no ``folder``, and remove its temporaries."""
    name = folder.name
    if not os.path.lexists(folder):
        old = _stale(folder.parent, [f"{name}.{_OLD}"])
        if old:
            os.rename(max(old, key=lambda p: p.stat().st_mtime), folder)
    remove_stale(folder.parent, [f"{name}.{_NEW}", f"{name}.{_OLD}", f"{name}.{_EARLIER_STAGING}"])


@contextlib.contextmanager
def replacing(folder: Path, replaces: Collection[str] | None = None) -> Iterator[Path]:
    """A new, empty folder to write the next version of ``folder`` in; it replaces ``folder``
    (created if missing) when the block ends without error. On error it is removed and
    ``folder`` stays as it was.

    ``replaces``: the entries of the current ``folder`` that the new version replaces; the
    others are carried over into it (hard-linked, or copied where the file system cannot link)
    unless it has an entry of the same name. Default None: the new version is the whole folder.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover(folder)
    staging = temporary(folder.parent, f"{folder.name}.{_NEW}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if replaces is not None and folder.is_dir():
            for entry in folder.iterdir():
                if entry.name not in replaces and not os.path.lexists(staging / entry.name):
                    _link_tree(entry, staging / entry.name)
        _swap(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(new: Path, folder: Path) -> None:
    """Put the complete folder ``new`` in the place of ``folder`` (see the module docstring)."""
    fsync_dir(new)
    if not os.path.lexists(folder):
        os.rename(new, folder)
        fsync_dir(folder.parent)
        return
    old = temporary(folder.parent, f"{folder.name}.{_OLD}")
    os.rename(folder, old)
    try:
        os.rename(new, folder)
    except BaseException:
        os.rename(old, folder)
        raise
    fsync_dir(folder.parent)  # the new version is in place for good before the old one goes
    shutil.rmtree(old, ignore_errors=True)


def _stale(folder: Path, stems: Collection[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _TEMPORARY.fullmatch(entry.name)
        if match and match["stem"] in stems and not process_alive(int(match["pid"])):
            found.append(entry)
    return found


def _link_tree(source: Path, target: Path) -> None:
    """``source`` (a file, a symlink or a folder) at ``target`` without copying file data."""
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True, copy_function=_link)
    else:
        _link(source, target)


def _link(source, target) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)
