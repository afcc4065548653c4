"""Compile every Triton kernel variant that real runs launch, for a GPU that is not here.

Triton compiles to a cubin without a device: only loading and launching need one. This script
gives Triton a driver that just names the target (sm_90, the H200, by default) and turns every
launch into a compile-only warm-up. It then drives the Triton backend on tiny CPU batches:

- ``summit_fast.aggregate`` over the bundled InceptionV1 and MobileNetV2 in fp32 and bf16
  autocast, NCHW and channels_last: the variants a real run compiles (block sizes follow the
  shapes, so every summary layer and conv edge is reached);
- the op variants that aggregate's defaults do not reach: the top-k rule, excluded channels,
  fp16 and bf16 weights, a conv with few targets per group.

Per compiled variant it records registers, spilled bytes (local memory), shared memory, its
global load instructions (vectorised or not) and compile seconds (from an empty Triton cache, unless ``--cache-dir`` names one). This catches
what the interpreter tests cannot -- the compiled path's type and shape rules (``tl.dot``
operands, layouts), register spills -- before a device session spends its minutes on them.
Exit status 1 if any case failed to compile.

    python bench/triton_compile_check.py [--arch 90] [--quick] [--tiles num_warps=4,...] [--out DIR]

``--quick`` compiles the op variants (small shapes, and InceptionV1 mixed4d's kxk edges at their real
sizes: about 45 variants, a minute here).
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

# The kernels must be compiled, not interpreted: decide before triton is imported.
os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when unset; 1 is its default

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

import summit_fast  # noqa: E402
from summit_fast.backends.triton import TritonBackend  # noqa: E402
from summit_fast.convspec import ConvSpec  # noqa: E402


class CompileOnlyDriver:
    """The parts of Triton's driver that compiling asks for: the target, a device, a stream."""

    def __init__(self, arch: int):
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


class Variants:
    """Turns launches into compile-only warm-ups and records each distinct compiled kernel."""

    def __init__(self):
        self.rows: dict[str, dict] = {}
        self.case = ""
        self._launch = JITFunction.run

    def install(self) -> None:
        variants = self

        def compile_only(fn, *args, grid, warmup, **kwargs):
            start = time.perf_counter()
            kernel = variants._launch(fn, *args, grid=grid, warmup=True, **kwargs)
            variants.record(fn, kernel, args, kwargs, time.perf_counter() - start)
            return kernel

        JITFunction.run = compile_only

    def record(self, fn, kernel, args, kwargs, seconds: float) -> None:
        key = kernel.metadata.hash
        if key in self.rows:
            return
        bound = inspect.signature(fn.fn).bind_partial(*args, **{k: v for k, v in kwargs.items()
                                                               if k in fn.arg_names})
        constexprs = [f"{p.name}={_short(bound.arguments[p.name])}" for p in fn.params
                      if p.is_constexpr and p.name in bound.arguments]
        tensors = sorted({_short(v.dtype) for v in bound.arguments.values() if isinstance(v, torch.Tensor)
                          and v.dtype.is_floating_point})
        self.rows[key] = {"kernel": fn.fn.__name__, "variant": " ".join(constexprs), "float args": ",".join(tensors),
                          "warps": kernel.metadata.num_warps, "shared B": kernel.metadata.shared,
                          **resource_usage(kernel.asm["cubin"]), "global loads": global_loads(kernel.asm["ptx"]),
                          **hot_loop_cost(kernel.asm["cubin"], bound.arguments, kernel.metadata.num_warps),
                          "compile s": round(seconds, 2),
                          "first case": self.case}


def _short(value) -> str:
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
    if value in names:
        return names[value]
    return str(value).replace("triton.language.", "").replace("tl.", "")


def resource_usage(cubin: bytes) -> dict:
    """Registers and local memory (spills and stack) per thread, read by cuobjdump."""
    from triton.backends.nvidia import compiler as nvidia

    tool = Path(nvidia.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True).stdout
    fields = dict(item.split(":", 1) for item in out.split() if ":" in item and item.split(":", 1)[1].isdigit())
    return {"regs": int(fields.get("REG", -1)), "local B": int(fields.get("LOCAL", -1))}


def global_loads(ptx: str) -> str:
    """The kernel's global load instructions by kind, e.g. "4 v4.b32, 2 b64": v4.b32 moves 128
    bits per thread (vectorised), b16/b32 one element (scalar)."""
    kinds = Counter(re.findall(r"ld\.global((?:\.cg)?(?:\.v\d)?\.b\d+)", ptx))
    return ", ".join(f"{n} {kind.lstrip('.')}" for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_PRODUCTS = ("HMMA", "HGMMA", "FFMA")


def hot_loop_cost(cubin: bytes, arguments: dict, num_warps: int) -> dict:
    """Static cost of the loop that computes products (SASS, read by cuobjdump): its instructions
    per iteration and per useful max step. The hot loop is the innermost loop (a backward branch
    enclosing no other) with the most product instructions (HMMA, HGMMA, FFMA). A kernel that
    takes BLOCK_J and BLOCK_P (the kxk kernel) handles one BLOCK_J x BLOCK_P tile of
    contributions M per iteration, so each thread makes BLOCK_J * BLOCK_P / threads useful max
    steps per iteration; other kernels get only the loop's size. Static counts: a branch in the
    loop counts whole."""
    from triton.backends.nvidia import compiler as nvidia

    tool = Path(nvidia.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([str(tool), "-sass", f.name], capture_output=True, text=True).stdout
    code = [(int(m[1], 16), m[3], m[4]) for m in _SASS_LINE.finditer(sass)]
    loops = []
    for addr, op, operands in code:
        target = re.match(r"\s*(?:`\()?(0x[0-9a-f]+)", operands) if op == "BRA" else None
        if target and int(target[1], 16) <= addr:
            loops.append((int(target[1], 16), addr))
    innermost = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]
    body = max(([op for addr, op, _ in code if a <= addr <= b] for a, b in innermost),
                key=lambda ops: sum(op.split(".")[0] in _PRODUCTS for op in ops), default=[])
    if not any(op.split(".")[0] in _PRODUCTS for op in body):
        return {"loop instr": "", "max steps": "", "instr/max": "", "MMAs/waits": ""}
    useful = ""
    if "BLOCK_J" in arguments and "BLOCK_P" in arguments:
        useful = arguments["BLOCK_J"] * arguments["BLOCK_P"] // (32 * num_warps)
    # Tensor-core products per iteration and the waits for them (wgmma's WARPGROUP.DEPBAR; HMMA
    # has no separate wait): split weights should issue all their products before one wait.
    mmas = sum(op.split(".")[0] in ("HMMA", "HGMMA") for op in body)
    waits = sum(op.startswith("WARPGROUP.DEPBAR") for op in body)
    return {"loop instr": len(body), "max steps": useful,
            "instr/max": round(len(body) / useful, 1) if useful else "", "MMAs/waits": f"{mmas}/{waits}"}


def op_cases(quick: bool):
    """(name, thunk) for the op variants: both rules, excluded channels, each input and weight
    type, layouts, 1x1 (plain and padded-sampled), kxk with and without tl.dot."""
    from summit_fast.kernels.activation import activation_update
    from summit_fast.kernels.influence import influence_update

    size = 7 if quick else 14
    labels = torch.zeros(2, dtype=torch.int64)

    def activation(dtype, channels_last, **rule):
        c = 96  # 14 x 14, as InceptionV1's mixed4 layers: vectorised loads in both layouts
        x = torch.randn(2, c, 14, 14).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        excluded = rule.pop("excluded", None)
        return lambda: activation_update(x, labels, torch.zeros(3, c, dtype=torch.int32), excluded=excluded, **rule)

    def influence(dtype, w_dtype, c_in, c_out, kernel, groups=1, padding=0, stride=1, channels_last=False,
                  wide_rows=False):
        x = torch.randn(2, c_in, size, size).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(c_out, c_in // groups, kernel, kernel).to(w_dtype)
        if wide_rows:  # taps 2**-30 of their row's largest: no exact fp16 split, _exact_rows_kernel
            weight[:, :, 0, 0] *= 2.0 ** -30
        conv = ConvSpec(stride=(stride, stride), pad=(padding,) * 4, groups=groups)
        counts = torch.zeros(3, c_out, c_in // groups, dtype=torch.int32)
        return lambda: influence_update(x, weight, conv, labels, counts, 5, 1)

    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    cases = [
        ("activation mass fp32 nchw", activation(f32, False, tau=0.01)),
        ("activation mass bf16 nhwc", activation(bf16, True, tau=0.01)),
        ("activation top-k fp16 nchw", activation(f16, False, topk=5)),
        ("activation top-k excluded bf16 nhwc",
         activation(bf16, True, topk=5, excluded=torch.arange(96) % 7 == 0)),
        ("1x1 fp32 nchw", influence(f32, f32, 64, 48, 1)),
        ("1x1 stride 2 padded bf16 nhwc", influence(bf16, bf16, 64, 48, 1, padding=1, stride=2, channels_last=True)),
        ("3x3 fp32 nchw", influence(f32, f32, 32, 48, 3, padding=1)),
        ("3x3 bf16 nhwc", influence(bf16, bf16, 32, 48, 3, padding=1, channels_last=True)),
        ("3x3 bf16, fp32 W nhwc", influence(bf16, f32, 32, 48, 3, padding=1, channels_last=True)),
        ("5x5 fp16, fp32 W nchw", influence(f16, f32, 16, 32, 5, padding=2)),
        ("3x3 depthwise fp32 nchw", influence(f32, f32, 32, 32, 3, groups=32, padding=1)),
        ("3x3 depthwise bf16 nhwc", influence(bf16, bf16, 32, 32, 3, groups=32, padding=1, channels_last=True)),
        ("3x3 groups 4 (8 targets each) fp32", influence(f32, f32, 32, 32, 3, groups=4, padding=1)),
        ("3x3 fp16, fp32 W, rows without an exact split", influence(f16, f32, 16, 32, 3, padding=1, wide_rows=True)),
    ]
    # InceptionV1 mixed4d's kxk edges at their real sizes (inputs pre-padded by the model): the
    # rows whose "instr/max" the kxk kernel's design is judged by.
    for kernel, c_in, c_out in ((3, 144, 288), (5, 32, 64)):
        for name, x_dtype, w_dtype, channels_last in (("bf16 nhwc", bf16, bf16, True), ("fp32 nchw", f32, f32, False),
                                                      ("bf16, fp32 W nhwc", bf16, f32, True),
                                                      ("fp16, fp32 W nchw", f16, f32, False)):
            def run(kernel=kernel, c_in=c_in, c_out=c_out, x_dtype=x_dtype, w_dtype=w_dtype, cl=channels_last):
                size = 14 + kernel - 1
                x = torch.randn(2, c_in, size, size).to(x_dtype)
                x = x.contiguous(memory_format=torch.channels_last) if cl else x
                weight = (torch.randn(c_out, c_in, kernel, kernel) * 0.02).to(w_dtype)  # as trained weights
                counts = torch.zeros(3, c_out, c_in, dtype=torch.int32)
                influence_update(x, weight, ConvSpec(), labels, counts, 5, 1)

            cases.append((f"mixed4d {kernel}x{kernel} {name}", run))
    return cases


def model_cases(quick: bool):
    """(name, thunk): one aggregate batch of two 224 px images per model and configuration."""
    from summit_fast.models import inception_v1, mobilenet_v2

    models = {"InceptionV1": inception_v1} if quick else {"InceptionV1": inception_v1, "MobileNetV2": mobilenet_v2}
    configs = [("bf16 autocast, nhwc", torch.bfloat16, True), ("fp32, nchw", None, False)]
    if not quick:
        configs += [("bf16 autocast, nchw", torch.bfloat16, False), ("fp32, nhwc", None, True)]
    images = torch.randn(2, 3, 224, 224)
    labels = torch.tensor([0, 1])
    for model_name, build in models.items():
        model = build().eval()
        for config, amp_dtype, channels_last in configs:
            def run(model=model, amp=amp_dtype, cl=channels_last):
                model.to(memory_format=torch.contiguous_format)  # channels_last=True converted it in place
                summit_fast.aggregate(model, [(images, labels)], backend="triton", device="cpu", num_classes=2,
                                      amp_dtype=amp, channels_last=cl, progress=False)

            yield f"{model_name} aggregate, {config}", run


def group_variants(rows: list[dict]) -> list[dict]:
    """One row per kernel, constexprs and float types; variants that differ only in Triton's
    stride and alignment specialisations are counted, with the largest resources among them."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        key = (r["kernel"], r["variant"], r["float args"])
        g = groups.setdefault(key, {**r, "variants": 0})
        g["variants"] += 1
        for field in ("shared B", "regs", "local B", "compile s"):
            g[field] = max(g[field], r[field])
    return [groups[k] for k in sorted(groups)]


def markdown(rows: list[dict]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability as an int (90 = sm_90, H100/H200)")
    parser.add_argument("--quick", action="store_true", help="op variants at small shapes only")
    parser.add_argument("--models", action="store_true", help="with --quick: add InceptionV1's aggregate runs")
    parser.add_argument("--cache-dir", help="Triton cache to use (default: a new empty one)")
    parser.add_argument("--tiles", default="", help="other tile sizes, e.g. num_warps=4,score_tile=4096 "
                                                       "(fields of summit_fast.kernels.common.Tiles)")
    parser.add_argument("--out", help="folder for triton_compile.md")
    args = parser.parse_args()
    from summit_fast.kernels.common import override_tiles

    tiles = {k: int(v) for k, v in (item.split("=") for item in args.tiles.split(",") if item)}

    cache = args.cache_dir or tempfile.mkdtemp(prefix="summit_triton_cache_")
    os.environ["TRITON_CACHE_DIR"] = cache
    driver.set_active(CompileOnlyDriver(args.arch))
    # The backend refuses CPU tensors outside the interpreter; here nothing is launched.
    TritonBackend.unavailable_reason = classmethod(lambda cls, device: None)
    variants = Variants()
    variants.install()

    cases = list(op_cases(args.quick))
    if not args.quick or args.models:
        cases += list(model_cases(args.quick))
    failures = []
    start = time.perf_counter()
    header = f"triton {triton.__version__}, torch {torch.__version__}, target sm_{args.arch}, tiles {args.tiles or 'default'}"
    print(f"{header}, cache {cache}", flush=True)
    for name, run in cases:
        variants.case = name
        before = len(variants.rows)
        t0 = time.perf_counter()
        try:
            with override_tiles(**tiles):
                run()
            status = "ok"
        except Exception as exc:  # keep going: report every failing case at once
            traceback.print_exc()
            failures.append(name)
            status = f"FAILED: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        print(f"  {name}: {status} ({len(variants.rows) - before} new variants, {time.perf_counter() - t0:.1f} s)",
              flush=True)

    rows = list(variants.rows.values())
    grouped = group_variants(rows)
    table = markdown(grouped) if grouped else "(nothing compiled)"
    spilled = [r for r in rows if r["local B"] > 0]
    summary = (f"{len(rows)} variants of {len({r['kernel'] for r in rows})} kernels compiled for sm_{args.arch} "
               f"in {time.perf_counter() - start:.0f} s; {len(spilled)} use local memory (spills); "
               f"{len(failures)} of {len(cases)} cases failed" + (f": {', '.join(failures)}" if failures else ""))
    print("\n" + table + "\n\n" + summary)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        Path(args.out, "triton_compile.md").write_text(f"# Triton compile check\n\n{header}\n\n{table}\n\n{summary}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
