"""Every CUDA kernel of csrc/cuda compiles for the H200 (sm_90) with nvcc, and
bench/cuda_compile_check.py reports each one's registers and spills. Runs wherever nvcc is (CI
has it); the kernels' results are checked by the CPU-executed tests (test_cuda_activation.py,
test_cuda_influence.py) and, on a GPU, compiled."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "cuda_compile_check.py"


def _kernel_names() -> set[str]:
    names = set()
    for source in (ROOT / "csrc" / "cuda").glob("*.cu"):
        names |= set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(", source.read_text()))
    return names


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found: CUDA kernels compile only with a CUDA toolkit")
def test_every_cuda_kernel_compiles_for_sm90_and_is_reported(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--arch", "90", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = (tmp_path / "cuda_compile.md").read_text()
    lines = [[cell.strip() for cell in line.split("|")[1:-1]] for line in report.splitlines() if line.startswith("| ")]
    rows = [dict(zip(lines[0], cells)) for cells in lines[2:]]
    reported = {re.sub(r"<.*", "", row["kernel"]).split("::")[-1] for row in rows}
    assert _kernel_names(), "no __global__ kernel found in csrc/cuda/*.cu"
    assert _kernel_names() <= reported, f"kernels missing from the report: {_kernel_names() - reported}"
    assert all(row["arch"] == "sm_90" and int(row["regs"]) > 0 for row in rows)
    assert re.search(r"; \d+ spill; 0 failed to compile\.", report)
