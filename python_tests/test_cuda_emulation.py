"""The CPU execution layer of the CUDA kernels (csrc/cuda/emulation.h): barriers, warp
shuffles, ballots, atomics, thread indices and half types behave as CUDA defines them, and a
kernel that would deadlock or use a partial warp mask is reported, not hung. The kernels of
python_tests/cuda/emulation_check.cpp are compiled here with the host C++ compiler."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ["block_sum", "warp_ops", "atomics", "indices", "divergent_barrier", "partial_mask", "early_return",
          "half_types"]


@pytest.fixture(scope="module")
def check_output(tmp_path_factory) -> str:
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler found (set CXX)")
    exe = tmp_path_factory.mktemp("cuda_emulation") / "emulation_check"
    subprocess.run([compiler, "-std=c++17", "-O1", f"-I{ROOT / 'csrc'}", str(ROOT / "python_tests/cuda/emulation_check.cpp"),
                    str(ROOT / "csrc/cuda/emulation.cpp"), "-o", str(exe)], check=True, capture_output=True, timeout=300)
    done = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


@pytest.mark.parametrize("name", CHECKS)
def test_cuda_emulation(check_output, name):
    assert f"ok {name}\n" in check_output, check_output
