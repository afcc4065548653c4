"""Every Triton kernel compiles for the H200 (sm_90) here, without a GPU.

The interpreter tests check what the kernels compute; they cannot see the compiled path's own
rules (``tl.dot`` operand types and shapes, layouts, register limits). ``bench/
triton_compile_check.py --quick`` compiles each kernel's variants -- both selection rules,
excluded channels, fp32/fp16/bf16 inputs, fp32 weights under half inputs, NCHW and
channels_last, 1x1 and kxk, with and without ``tl.dot`` -- to a cubin. It runs in a child
process because this one interprets the kernels (TRITON_INTERPRET=1, conftest.py).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "triton_compile_check.py"
KERNELS = ("_activation_kernel", "_extrema_kernel", "_pointwise_kernel", "_conv_kernel")


def test_every_kernel_variant_compiles_for_sm90(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--arch", "90", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = (tmp_path / "triton_compile.md").read_text()
    assert re.search(r"; 0 of \d+ cases failed", report), report[-500:]
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| _")]
    assert {row[0].strip() for row in rows} == set(KERNELS)
    # Every variant produced machine code that ptxas accepted: registers were read from the cubin.
    assert rows and all(int(row[5]) > 0 for row in rows)
    assert "DOT_DTYPE=bf16 SPLIT_W=True" in report and "DOT_DTYPE=fp32 SPLIT_W=False USE_DOT=True" in report
