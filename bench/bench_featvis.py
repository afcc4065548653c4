"""Feature visualisation throughput: channels per second rendered in batches of 32 against one
channel at a time (batch 1), same model, layer, size, steps and device, in one process.

    python bench/bench_featvis.py --threads 1          # MobileNetV2 (real weights), CPU, 64 px, 16 steps
    python bench/bench_featvis.py --device cuda --size 128 --steps 64
    python bench/bench_featvis.py --default-malloc        # without the command line's allocator setting

Both modes call summit_fast.featvis.render_channels once per repeat (one probe forward pass
each); the batched one renders --channels channels, the other --single channels of the same
layer. Each figure is the median of --repeats runs after one untimed warm-up of each mode.
Like the ``summit-fast`` command, it keeps freed memory for reuse (summit_fast._allocator) unless
--default-malloc is given.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from summit_fast._allocator import keep_freed_memory
from summit_fast.featvis import FeatureVisSettings, render_channels
from summit_fast.models import mobilenet_v2

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "converted" / \
    "mobilenet_v2_1.0_224_quant.torchvision_layout.pt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=WEIGHTS, help="MobileNetV2 state dict (TF layout, tf_padding)")
    p.add_argument("--layer", default="features.10")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--channels", type=int, default=32, help="channels rendered batched, in one batch")
    p.add_argument("--single", type=int, default=8, help="channels rendered one at a time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's; 1 on a shared machine, where threads waiting for each "
                        "other slow small batches most and would flatter the ratio)")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave the C allocator as it is (the summit-fast command keeps freed memory for reuse)")
    args = p.parse_args()
    allocator = "glibc default" if args.default_malloc or not keep_freed_memory() else "freed memory kept (as the CLI)"
    if args.threads:
        torch.set_num_threads(args.threads)

    weights = args.weights if args.weights.is_file() else None
    model = mobilenet_v2(weights, tf_padding=True).to(args.device)
    settings = FeatureVisSettings(size=args.size, steps=args.steps)
    modes = {"batched (batch 32)": (args.channels, 32), "one at a time (batch 1)": (args.single, 1)}

    def seconds(channels: int, batch: int) -> float:
        targets = [(args.layer, c) for c in range(channels)]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        render_channels(model, targets, settings, batch=batch, device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for channels, batch in modes.values():  # warm-up: allocator, kernels, thread pools
        seconds(min(channels, batch), batch)
    rates = {}
    for name, (channels, batch) in modes.items():
        times = [seconds(channels, batch) for _ in range(args.repeats)]
        rates[name] = (channels, statistics.median(times), channels / statistics.median(times))

    print(f"MobileNetV2 ({'real' if weights else 'random'} weights), layer {args.layer}, {args.size} px, "
          f"{args.steps} steps, {args.device}, {torch.get_num_threads()} threads, allocator: {allocator}, "
          f"median of {args.repeats}")
    print(f"| mode | channels | seconds | channels/s | s/channel |")
    print(f"| --- | ---: | ---: | ---: | ---: |")
    for name, (channels, median, rate) in rates.items():
        print(f"| {name} | {channels} | {median:.2f} | {rate:.2f} | {1 / rate:.3f} |")
    batched, single = (r[2] for r in rates.values())
    print(f"batched / one at a time: {batched / single:.1f}x")


if __name__ == "__main__":
    main()
