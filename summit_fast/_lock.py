"""An exclusive lock on an output: one process writes it at a time.

The lock is ``fcntl.flock`` on a lock file, which the kernel releases when the process ends in
any way (a crash, a kill), so a lock is never left behind by a dead process. The file holds the
holder's PID and what it is (``"1234 summit-fast run"``), so that the next one can say who holds
it; the holder removes it when it is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class FolderBusy(RuntimeError):
    """Another process holds the lock of an output (a one-line message naming it and its PID)."""


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, holder: str, remedy: str):
    """Hold an exclusive lock on ``lock_file`` (created, with its folder, if missing) for the
    block; released when the block ends, also on error, and by the kernel if the process dies.

    Raises :class:`FolderBusy` at once if another process holds it: "``what`` is in use by another
    ``holder`` (PID n); ``remedy``", with the other's own ``holder`` and PID as its lock file says.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock_file, what, remedy)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {holder}\n".encode(), 0)
        yield
    finally:
        # Removed while still held: whoever opened it meanwhile finds it replaced and retries.
        lock_file.unlink(missing_ok=True)
        os.close(fd)


def _acquire(lock_file: Path, what: str, remedy: str) -> int:
    """An open descriptor of ``lock_file`` that holds its lock."""
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split(maxsplit=1)
            os.close(fd)
            who = f"{holder[1].strip()} (PID {holder[0]})" if len(holder) == 2 else "process"
            raise FolderBusy(f"{what} is in use by another {who}; {remedy}") from None
        if _same_file(fd, lock_file):
            return fd
        os.close(fd)  # its holder removed it between our open and our lock: lock the new one


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)
