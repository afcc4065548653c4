"""Compile every CUDA source of csrc/cuda for each target GPU and report, per kernel, what ptxas
made of it: registers, spilled bytes, stack, shared memory, and (from the PTX) how wide its
global loads are. No GPU is needed: this is the evidence about the compiled kernels that a
machine without one can give, beside the CPU-executed tests.

    python bench/cuda_compile_check.py [--arch 75,80,86,89,90] [--out DIR]

Writes DIR/cuda_compile.md (a table, one row per kernel and architecture) and prints it.
Exit status 1 if a source fails to compile.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
ARCHS = "75,80,86,89,90"  # the build's CMAKE_CUDA_ARCHITECTURES

_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+a?)'")
_FRAME = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")
_USED = re.compile(r"Used (?P<regs>\d+) registers(?:, used \d+ barriers)?(?:, (?P<smem>\d+) bytes smem)?")
_PTX_ENTRY = re.compile(r"^\.visible \.entry (\S+)\(", re.M)


def nvcc() -> str:
    found = shutil.which("nvcc")
    if found is None:
        sys.exit("nvcc not found: put the CUDA toolkit's bin folder on PATH")
    return found


def demangle(names: list[str]) -> dict[str, str]:
    """Readable kernel names: demangled, without the namespace and the argument list."""
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    # c++filt gives up on some names (decltype in the signature): read their nested name then.
    return {n: _short(d) if d != n else _nested_name(n) for n, d in zip(names, out)}


def _nested_name(mangled: str) -> str:
    """'_ZN6summit4cuda2ns6kernelI...' -> 'ns::kernel<...>': the length-prefixed parts of an
    Itanium nested name, without the summit::cuda namespace."""
    if not mangled.startswith("_ZN"):
        return mangled
    parts, at = [], 3
    while (digits := re.match(r"\d+", mangled[at:])):
        start = at + len(digits.group())
        parts.append(mangled[start:start + int(digits.group())])
        at = start + int(digits.group())
    name = "::".join(p for p in parts if p not in ("summit", "cuda"))
    return name + (_template_args(mangled[at + 1:]) if mangled[at:at + 1] == "I" else "")


_BUILTIN = {"f": "float", "d": "double", "i": "int", "s": "short", "l": "long", "b": "bool"}


def _template_args(code: str) -> str:
    """'dLb1ELi4EE...' -> '<double, true, 4>': the simple template arguments (builtin and named
    types, bool and integer constants); '...' for the rest."""
    args = []
    while code and code[0] != "E":
        if code[0] in _BUILTIN:
            args.append(_BUILTIN[code[0]])
            code = code[1:]
        elif (named := re.match(r"(\d+)", code)):
            n = int(named.group())
            args.append(code[len(named.group()):len(named.group()) + n])
            code = code[len(named.group()) + n:]
        elif (constant := re.match(r"L([a-z])(n?\d+)E", code)):
            value = constant.group(2).replace("n", "-")
            args.append({"1": "true", "0": "false"}[value] if constant.group(1) == "b" else value)
            code = code[constant.end():]
        else:
            args.append("...")
            break
    return "<" + ", ".join(args) + ">"


def _short(demangled: str) -> str:
    """'void summit::cuda::k<(summit::DType)0, 4>(float const*)' -> 'k<(DType)0, 4>'."""
    name = re.sub(r"^void ", "", demangled).replace("summit::cuda::", "").replace("summit::", "")
    depth = 0
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            return name[:i]
    return name


def ptxas_report(source: Path, arch: str, work: Path) -> list[dict]:
    """One row per kernel of `source` compiled for sm_`arch`."""
    cmd = [nvcc(), "-std=c++17", "-O3", f"-I{ROOT / 'csrc'}", f"-arch=sm_{arch}", "-cubin", "-Xptxas", "-v",
           str(source), "-o", str(work / f"{source.stem}.sm_{arch}.cubin")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{source.name} for sm_{arch} did not compile:\n{done.stderr[-3000:]}")
    rows, row = [], None
    for line in done.stderr.splitlines():
        if m := _ENTRY.search(line):
            row = {"kernel": m["name"], "arch": m["arch"]}
            rows.append(row)
        elif row is not None and (m := _FRAME.search(line)):
            row.update(stack=int(m["stack"]), spill_stores=int(m["stores"]), spill_loads=int(m["loads"]))
        elif row is not None and (m := _USED.search(line)):
            row.update(regs=int(m["regs"]), smem=int(m["smem"] or 0))
    return rows


def ptx_loads(source: Path, arch: str, work: Path) -> dict[str, str]:
    """Per kernel, its global load instructions by width (e.g. 'v4.f32 x2, f32 x3')."""
    ptx = work / f"{source.stem}.sm_{arch}.ptx"
    subprocess.run([nvcc(), "-std=c++17", "-O3", f"-I{ROOT / 'csrc'}", f"-arch=sm_{arch}", "-ptx", str(source),
                    "-o", str(ptx)], check=True, capture_output=True)
    text = ptx.read_text()
    starts = [(m.start(), m.group(1)) for m in _PTX_ENTRY.finditer(text)] + [(len(text), None)]
    loads = {}
    for (begin, name), (end, _) in zip(starts, starts[1:]):
        kinds: dict[str, int] = {}
        for m in re.finditer(r"ld\.global(?:\.nc)?(?:\.L\w+::\w+)*\.((?:v\d\.)?[a-z]\d+)", text[begin:end]):
            kinds[m.group(1)] = kinds.get(m.group(1), 0) + 1
        loads[name] = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none"
    return loads


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=ARCHS, help=f"comma-separated compute capabilities (default {ARCHS})")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for cuda_compile.md")
    args = parser.parse_args(argv)
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for source in SOURCES:
            for arch in archs:
                try:
                    found = ptxas_report(source, arch, work)
                    loads = ptx_loads(source, arch, work)
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    failures.append(str(exc))
                    continue
                for row in found:
                    row.update(source=source.name, loads=loads.get(row["kernel"], "?"))
                rows.extend(found)
    names = demangle(sorted({r["kernel"] for r in rows}))
    lines = ["| source | kernel | arch | regs | spill stores | spill loads | stack | smem | global loads (PTX) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["source"], names[r["kernel"]], r["arch"])):
        lines.append(f"| {r['source']} | {names[r['kernel']]} | {r['arch']} | {r.get('regs', '?')} | "
                     f"{r.get('spill_stores', '?')} | {r.get('spill_loads', '?')} | {r.get('stack', '?')} | "
                     f"{r.get('smem', '?')} | {r['loads']} |")
    spilled = sum(1 for r in rows if r.get("spill_stores", 0) or r.get("spill_loads", 0))
    lines.append("")
    lines.append(f"{len(rows)} kernel builds ({len(SOURCES)} sources x {len(archs)} architectures); "
                 f"{spilled} spill; {len(failures)} failed to compile.")
    report = "\n".join(lines) + "\n" + "".join(f"\n{f}\n" for f in failures)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda_compile.md").write_text(report)
    print(report)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
