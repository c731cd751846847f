"""Build the distillation set: pristine content -> processing ladder -> VMAF teacher labels, written as
``labels.csv`` (KVQ truth form), ``splits.json`` (content-disjoint, by origin), ``pairs.csv`` and
``manifest.json``.

Resumable and idempotent: videos already rendered are kept; a teacher score is reused only when its key
(teacher revision, frame step, sha256 of the reference and of the video) still matches, so a changed
video or teacher is scored again. Each teacher has its own score cache (:func:`scores_file`).
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kvqe.errors import BadInputError
from kvqe.files import sha256_file
from kvqe.training.content import Source, make_sources, split_by_origin, split_by_source
from kvqe.training.ladder import LADDER, TINY_LADDER, render
from kvqe.training.teacher import DEFAULT_TEACHER, SCORE_RANGE, VmafTeacher, teacher_model

# VMAF points: one QP/CRF group (about 6 CRF) apart on this ladder moves VMAF by 5-15 points, so pairs
# closer than 5 points are within the teacher's own noise across content and are not ranked.
HOMOLOGOUS_MIN_GAP = 5.0
# The split is drawn with its own seed, chosen (before any training) so that the test split holds a real
# video segment set and natural scenes, not only the microscopy/retina photos.
SPLIT_SEED = 4


def scores_file(teacher_name: str) -> str:
    """The set's cache of one teacher's per-frame scores: each teacher keeps its own, so switching back and
    forth between teachers scores each video once per teacher."""
    return "teacher_scores.json" if teacher_name == DEFAULT_TEACHER else f"teacher_scores.{teacher_name}.json"


def _ffmpeg_versions() -> list[str]:
    """``ffmpeg -version``'s version line and its library lines (libavcodec ...)."""
    lines = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout.splitlines()
    return [line.strip() for line in lines[:1] + [line for line in lines if line.startswith("lib")]]


def _score_key(revision: str, frame_step: int, reference_sha: str, video_sha: str) -> str:
    text = json.dumps([revision, frame_step, reference_sha, video_sha])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pairs(scores: dict[str, float], source_of: dict[str, str], splits: dict[str, list[str]],
           seed: int) -> list[tuple[str, str, int, str]]:
    """Per split: homologous pairs (versions of one source whose scores differ by the gap) and as many
    seeded non-homologous pairs (versions of different sources of that split, same gap); rank 1 means
    video1 is better, 2 that video2 is. No pair crosses splits."""
    rows = []
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        names = sorted(n for n in scores if source_of[n] in set(splits[split]))
        same: list[tuple[str, str]] = []
        other: list[tuple[str, str]] = []
        for a, b in itertools.combinations(names, 2):
            if abs(scores[a] - scores[b]) >= HOMOLOGOUS_MIN_GAP:
                (same if source_of[a] == source_of[b] else other).append((a, b))
        picked = sorted(rng.choice(len(other), size=min(len(same), len(other)), replace=False)) if other else []
        rows += [(a, b, 1 if scores[a] >= scores[b] else 2, "homologous") for a, b in same]
        rows += [(*other[int(i)], 1 if scores[other[int(i)][0]] >= scores[other[int(i)][1]] else 2, "nonhomologous")
                 for i in picked]
    return rows


def build_dataset(out: Path, *, seed: int = 0, split_seed: int = SPLIT_SEED, tiny: bool = False, frame_step: int = 1,
                  teacher_name: str = DEFAULT_TEACHER, workers: int = 2,
                  sources: list[Source] | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Make (or complete) the dataset in ``out`` with ``workers`` parallel jobs, labelled by the teacher
    ``teacher_name`` (a :data:`kvqe.training.teacher.TEACHERS` name); returns its manifest. ``sources``:
    the operator's own references instead of kvqe's content, split by source with ``split_seed``."""
    model = teacher_model(teacher_name)
    timings: dict[str, float] = {}
    started = clock = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    own = sources is not None
    sources = sources if sources is not None else make_sources(out / "pristine", seed=seed, tiny=tiny)
    timings["content"] = time.perf_counter() - clock
    progress(f"{len(sources)} pristine sources")
    ladder = TINY_LADDER if tiny else LADDER
    clock = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        videos = list(pool.map(lambda job: (job[0], render(job[0], job[1], out)), [(s, v) for s in sources for v in ladder]))
        hashes = dict(zip([s.path for s in sources] + [v for _, v in videos],
                          pool.map(sha256_file, [s.path for s in sources] + [v for _, v in videos]), strict=True))
    timings["ladder"] = time.perf_counter() - clock
    progress(f"{len(videos)} processed videos")

    clock = time.perf_counter()
    cache_file = out / scores_file(model.name)
    cache: dict[str, Any] = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    teacher = VmafTeacher(frame_step=frame_step, model=teacher_name)
    lock = threading.Lock()

    def score_source(source: Source) -> None:
        reference = None
        for video in (v for s, v in videos if s is source):
            key = _score_key(model.revision, frame_step, hashes[source.path], hashes[video])
            entry = cache.get(video.name)
            if isinstance(entry, dict) and entry.get("key") == key:
                continue
            reference = reference or teacher.reference_frames(source.path, source.width, source.height)
            per_frame = teacher.per_frame(reference, video, source.width, source.height)
            with lock:
                cache[video.name] = {"key": key, "score": float(np.mean(per_frame)),
                                     "per_frame": [round(float(s), 4) for s in per_frame]}
        with lock:
            cache_file.write_text(json.dumps(cache, indent=1, sort_keys=True))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(score_source, sources), 1):
            progress(f"teacher: {done}/{len(sources)} sources")
    timings["teacher"] = time.perf_counter() - clock

    scores = {video.name: cache[video.name]["score"] for _, video in videos}
    with (out / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("filename", "score"), *sorted((n, f"{s:.4f}") for n, s in scores.items())])
    splits = split_by_source([s.name for s in sources], split_seed) if own else split_by_origin(sources, split_seed)
    (out / "splits.json").write_text(json.dumps(splits, indent=2))
    source_of = {video.name: source.name for source, video in videos}
    with (out / "pairs.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("video1", "video2", "rank", "kind"), *_pairs(scores, source_of, splits, seed)])
    timings["total"] = time.perf_counter() - started
    manifest = {
        "seed": seed, "split_seed": split_seed, "tiny": tiny,
        "sources": [{"name": s.name, "origin": s.origin, "recipe": s.recipe, "sha256": hashes[s.path]}
                    for s in sources],
        "versions": [{"name": v.name, "filters": v.filters, "codec": list(v.codec), "upload": list(v.upload),
                      "upload_filters": v.upload_filters} for v in ladder],
        "videos": len(scores),
        "files": {video.name: hashes[video] for _, video in videos},
        "teacher": {"name": model.name, "model": f"{model.title} (vmaf-torch)", "revision": model.revision,
                    "units": model.units,
                    "vmaf_torch": importlib.metadata.version("vmaf-torch"), "frame_step": frame_step,
                    "pooling": "mean of per-frame scores clipped to the range", "range": list(SCORE_RANGE)},
        "homologous_min_gap": HOMOLOGOUS_MIN_GAP, "ffmpeg": _ffmpeg_versions(),
        "timings_seconds": {k: round(v, 1) for k, v in timings.items()}, "seconds": round(timings["total"], 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def ensure_dataset(out: Path, *, teacher_name: str | None, seed: int, frame_step: int,
                   progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The set in ``out``, labelled by ``teacher_name`` (None: whichever teacher labelled it): built with
    ``seed`` and ``frame_step`` when absent; relabelled when another teacher labelled it, keeping its videos,
    its seeds and its frame step. Returns its manifest ({} for a labels.csv that came without one)."""
    model = teacher_model(teacher_name or DEFAULT_TEACHER)
    manifest_file = out / "manifest.json"
    if not (out / "labels.csv").is_file():
        progress(f"building the distillation set in {out} (content, processing ladder, {model.title} teacher)")
        return build_dataset(out, seed=seed, frame_step=frame_step, teacher_name=model.name, progress=progress)
    if not manifest_file.is_file():
        if teacher_name is None:
            return {}
        raise BadInputError(f"{out} has labels.csv but no manifest.json: kvqe cannot tell which teacher made "
                            f"it, nor rebuild it with the {teacher_name} teacher")
    manifest: dict[str, Any] = json.loads(manifest_file.read_text())
    if teacher_name is None or manifest.get("teacher", {}).get("revision") == model.revision:
        return manifest
    progress(f"relabelling {out} with the {model.title} teacher (its videos are kept)")
    return build_dataset(out, seed=manifest["seed"], split_seed=manifest["split_seed"], tiny=manifest["tiny"],
                         frame_step=manifest["teacher"]["frame_step"], teacher_name=model.name, progress=progress)
