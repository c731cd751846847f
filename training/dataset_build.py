"""Build the distillation set: pristine content -> processing ladder -> VMAF teacher labels, written as
``labels.csv`` (KVQ truth form), ``splits.json`` (content-disjoint, by origin), ``pairs.csv`` and
``manifest.json``. Resumable: videos and scores already made are kept."""
from __future__ import annotations

import csv
import itertools
import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kvqe.training.content import make_sources, split_by_origin
from kvqe.training.ladder import LADDER, TINY_LADDER, render
from kvqe.training.teacher import VmafTeacher

HOMOLOGOUS_MIN_GAP = 5.0  # VMAF points: about one CRF group apart on this ladder (see manifest)
# The split is drawn with its own seed, chosen (before any training) so that the test split holds a real
# video segment set and natural scenes, not only the microscopy/retina photos.
SPLIT_SEED = 4


def _ffmpeg_version() -> str:
    return subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]


def _pairs(scores: dict[str, float], source_of: dict[str, str], seed: int) -> list[tuple[str, str, int, str]]:
    """Homologous pairs (versions of one source whose scores differ by the gap) and as many seeded
    non-homologous pairs (versions of different sources); rank 1 means video1 is better."""
    rows = []
    names = sorted(scores)
    for a, b in itertools.combinations(names, 2):
        if source_of[a] == source_of[b] and abs(scores[a] - scores[b]) >= HOMOLOGOUS_MIN_GAP:
            rows.append((a, b, 1 if scores[a] >= scores[b] else 2, "homologous"))
    rng = np.random.default_rng(seed)
    others = [(a, b) for a, b in itertools.combinations(names, 2)
              if source_of[a] != source_of[b] and abs(scores[a] - scores[b]) >= HOMOLOGOUS_MIN_GAP]
    for i in rng.choice(len(others), size=min(len(rows), len(others)), replace=False) if others else []:
        a, b = others[int(i)]
        rows.append((a, b, 1 if scores[a] >= scores[b] else 2, "nonhomologous"))
    return rows


def build_dataset(out: Path, *, seed: int = 0, split_seed: int = SPLIT_SEED, tiny: bool = False, frame_step: int = 1,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Make (or complete) the dataset in ``out``; returns its manifest."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sources = make_sources(out / "pristine", seed=seed, tiny=tiny)
    progress(f"{len(sources)} pristine sources")
    ladder = TINY_LADDER if tiny else LADDER
    jobs = [(s, v) for s in sources for v in ladder]
    with ThreadPoolExecutor(max_workers=2) as pool:
        videos = list(pool.map(lambda job: (job[0], render(job[0], job[1], out)), jobs))
    progress(f"{len(videos)} processed videos")
    cache_file = out / "teacher_scores.json"
    cache: dict[str, float] = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    teacher = VmafTeacher(frame_step=frame_step)
    for i, source in enumerate(sources):
        todo = [video for s, video in videos if s is source and video.name not in cache]
        if todo:
            reference = teacher.reference_frames(source.path, source.width, source.height)
            for video in todo:
                cache[video.name] = teacher.score(reference, video, source.width, source.height)
            cache_file.write_text(json.dumps(cache, indent=1, sort_keys=True))
        progress(f"teacher: {i + 1}/{len(sources)} sources")
    scores = {video.name: cache[video.name] for _, video in videos}
    with (out / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("filename", "score"), *sorted((n, f"{s:.4f}") for n, s in scores.items())])
    splits = split_by_origin(sources, split_seed)
    (out / "splits.json").write_text(json.dumps(splits, indent=2))
    source_of = {video.name: source.name for source, video in videos}
    with (out / "pairs.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("video1", "video2", "rank", "kind"), *_pairs(scores, source_of, seed)])
    manifest = {
        "seed": seed, "split_seed": split_seed, "tiny": tiny, "sources": [{"name": s.name, "origin": s.origin, "recipe": s.recipe} for s in sources],
        "versions": [{"name": v.name, "filters": v.filters, "codec": list(v.codec)} for v in ladder],
        "teacher": {"model": "VMAF v0.6.1 (vmaf-torch)", "frame_step": frame_step, "pooling": "mean",
                    "range": [0, 100]},
        "homologous_min_gap": HOMOLOGOUS_MIN_GAP, "ffmpeg": _ffmpeg_version(),
        "videos": len(scores), "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
