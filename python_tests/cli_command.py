"""How tests run the ``summit-fast`` command as a user would: the console script installed beside
this Python, started outside the source tree, so that the installed package (with its compiled
``summit_fast._C``) is imported rather than the ``summit_fast/`` folder of the working directory."""

import subprocess
import sys
import tempfile
from pathlib import Path


def cli_command() -> list[str]:
    """The command line that starts summit-fast."""
    script = Path(sys.executable).with_name("summit-fast")
    return [str(script)] if script.exists() else [sys.executable, "-m", "summit_fast.cli"]


def run_cli(*args: str, timeout: float = 900, **options) -> subprocess.CompletedProcess:
    """Run ``summit-fast ARGS`` to completion (text output captured; options go to subprocess.run).
    ``timeout`` only stops a hung command: a loaded machine can be ten times slower than a quiet one."""
    return subprocess.run([*cli_command(), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=tempfile.gettempdir(), **options)


def start_cli(*args: str) -> subprocess.Popen:
    """Start ``summit-fast ARGS`` in the background, stdout and stderr piped as text."""
    return subprocess.Popen([*cli_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tempfile.gettempdir())
