"""Peak memory and time of SR enhancement, tiled vs untiled, measured in the same run.

Each configuration runs in a fresh process (peak RSS is per process); ratios are against the untiled
baseline. ``--smoke``: a 128x128 input and one 64-pixel tile, to check that the script runs.
Usage: python bench/sr_tiling_memory.py [--size 512] [--tiles 128,256] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import sys

from _common import run  # bench/ is on sys.path when a script of it runs

_CHILD = """
import json, resource, sys, time
import cv2, numpy as np, kvqe
from kvqe.samples import sample_image_path
size, tile = int(sys.argv[1]), int(sys.argv[2])
image = cv2.resize(cv2.imread(str(sample_image_path())), (size, size), interpolation=cv2.INTER_CUBIC)
model = kvqe.load("sr")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
out = model.enhance(image, tile=tile)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tile": tile, "seconds": seconds, "peak_mib": peak / 1024, "growth_mib": (peak - base) / 1024}))
"""


def measure(size: int, tile: int) -> dict[str, float]:
    return json.loads(run([sys.executable, "-c", _CHILD, str(size), str(tile)], f"tile {tile}").stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512, help="input edge in pixels (output is 4x)")
    parser.add_argument("--tiles", default="128,256", help="comma-separated tile sizes to compare")
    parser.add_argument("--smoke", action="store_true", help="a 128x128 input, one 64-pixel tile: does it run?")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.tiles = 128, "64"
    baseline = measure(args.size, 0)
    print(f"{args.size}x{args.size} -> {4 * args.size}x{4 * args.size}, embedded realesr-animevideov3, onnxruntime")
    print(f"{'tile':>6} {'seconds':>8} {'mem growth MiB':>15} {'mem ratio':>10} {'time ratio':>10}")
    for tile in [0] + [int(t) for t in args.tiles.split(",")]:
        result = baseline if tile == 0 else measure(args.size, tile)
        print(f"{tile or 'none':>6} {result['seconds']:8.2f} {result['growth_mib']:15.1f} "
              f"{result['growth_mib'] / baseline['growth_mib']:10.2f} {result['seconds'] / baseline['seconds']:10.2f}")


if __name__ == "__main__":
    main()
