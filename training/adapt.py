"""Adapt the student to an operator's own catalogue: their reference videos -> kvqe's ladder of encodes and
a VMAF teacher -> a labelled set split by source -> the shipped student's heads fine-tuned on the train
sources -> shipped vs adapted on the held-out sources (KVQ's metrics) -> checkpoint, report and bundle.

The frozen backbone stays frozen: fine-tuning starts from the shipped heads and feature standardisation.
Nothing here is shared between threads; each call works on its own files.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvqe.errors import BadInputError
from kvqe.evaluation import evaluate, read_pairs
from kvqe.files import atomic_output_file, sha256_file
from kvqe.models.student import KvqeStudent
from kvqe.sdk.loader import embedded_bundle_path
from kvqe.training.content import Source
from kvqe.training.distill import (
    Clip,
    DistillConfig,
    load_clips,
    load_student,
    predict,
    save_checkpoint,
    source_of,
    train,
)
from kvqe.training.report import METRICS
from kvqe.training.run import read_teacher_labels, run_record

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".y4m", ".m4v", ".ts")
# Fine-tuning from the shipped heads: a third of the from-scratch learning rate and half its epochs, chosen
# on the validation sources of docs/adaptation.md's run (40 epochs at 3e-4 barely moved the heads).
FINE_TUNE = DistillConfig(epochs=100, batch_videos=16, lr=1e-3)


def shipped_checkpoint() -> Path:
    """The shipped student's checkpoint (``assets/vqa-student.pth`` of a source checkout), checked against
    the sha256 the embedded bundle records for its weights; a wheel install does not carry it (use --init)."""
    manifest = json.loads((embedded_bundle_path("vqa") / "manifest.json").read_text(encoding="utf-8"))
    expected = manifest["weights"]["files"]["model"]
    for root in dict.fromkeys((Path(__file__).resolve().parents[1], embedded_bundle_path("vqa").resolve().parents[2])):
        candidate = root / "assets" / expected["name"]
        if candidate.is_file() and sha256_file(candidate) == expected["sha256"]:
            return candidate
    raise BadInputError(f"the shipped student checkpoint ({expected['name']}, sha256 {expected['sha256'][:12]}...) "
                        "is not in this install; give it with --init CKPT")


def _probe(path: Path) -> tuple[int, int]:
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "stream=width,height", "-of", "csv=p=0", str(path)],
                            capture_output=True, text=True, check=False)
    try:
        width, height = (int(v) for v in result.stdout.strip().split(",")[:2])
    except ValueError:
        raise BadInputError(f"{path} is not a readable video: {result.stderr.strip()[:200]}") from None
    return width, height


def operator_sources(folder: Path) -> list[Source]:
    """Every video in ``folder`` (not recursive) as a reference source, named after its file stem."""
    if not folder.is_dir():
        raise BadInputError(f"--sources: no such folder: {folder}")
    sources: list[Source] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        name = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)).strip("_") or "video"
        if any(s.name == name for s in sources):
            raise BadInputError(f"--sources: {path.name} and another file both map to source name {name!r}")
        width, height = _probe(path)
        if width % 2 or height % 2:
            raise BadInputError(f"{path.name}: {width}x{height}; the ladder's 4:2:0 encodes need even sizes")
        sources.append(Source(name, name, path, width, height, "operator reference"))
    if len(sources) < 3:
        raise BadInputError(f"--sources {folder} holds {len(sources)} videos ({', '.join(VIDEO_SUFFIXES)}); "
                            "adaptation needs at least 3 reference videos")
    return sources


def compare(models: dict[str, KvqeStudent], clips: list[Clip], pairs_file: Path) -> dict[str, Any]:
    """Each model's KVQ figures (SROCC/PLCC/KROCC/RMSE/Rank1/Rank2/final) against the teacher on ``clips``."""
    labels = {c.name: c.label for c in clips}
    pairs = [p for p in read_pairs(pairs_file) if p.video1 in labels and p.video2 in labels]
    results = {}
    for name, model in models.items():
        scores = dict(zip(labels, (float(v) for v in predict(model, clips)), strict=True))
        results[name] = {"figures": evaluate(scores, labels, pairs), "scores": scores}
    return {"videos": len(clips), "sources": sorted({source_of(c.name) for c in clips}), "pairs": len(pairs),
            "teacher": labels, "results": results}


def markdown(report: dict[str, Any]) -> str:
    """The comparison as a Markdown table (one row per model)."""
    rows = [f"Held-out sources: {', '.join(report['sources'])} ({report['videos']} videos, {report['pairs']} pairs)",
            "", "| model | " + " | ".join(m.upper() for m in METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for name, result in report["results"].items():
        cells = ["-" if result["figures"][m] is None else f"{result['figures'][m]:.3f}" for m in METRICS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def adapt(data: Path, init: Path, out: Path, config: DistillConfig, *, cache: Path,
          teacher: dict[str, Any] | None, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Fine-tune ``init``'s heads on the train sources of the set in ``data`` and write the checkpoint at
    ``out`` with its record, and the shipped-vs-adapted report beside it (``.report.json`` / ``.report.md``)."""

    started = time.perf_counter()
    labels = read_teacher_labels(data / "labels.csv")
    by_source = json.loads((data / "splits.json").read_text(encoding="utf-8"))
    splits = {split: sorted(n for n in labels if source_of(n) in set(by_source[split]))
              for split in ("train", "val", "test")}
    progress(f"preparing inputs: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} videos")
    clips = {split: load_clips(names, labels, data, config, cache, progress) for split, names in splits.items()}
    model, history = train(clips["train"], clips["val"], config, progress, init=load_student(init))
    report = compare({"shipped": load_student(init), "adapted": model}, clips["test"], data / "pairs.csv")
    report.update(init={"file": init.name, "sha256": sha256_file(init)}, seed=config.seed,
                  splits={k: sorted(by_source[k]) for k in splits})
    record = run_record(config, data / "labels.csv", teacher, {k: len(v) for k, v in splits.items()}, history,
                        {name: r["figures"] for name, r in report["results"].items()})
    record.update(init=report["init"], seconds=round(time.perf_counter() - started, 1))
    save_checkpoint(model, out, record)
    for suffix, text in ((".report.json", json.dumps(report, indent=1, sort_keys=True)), (".report.md", markdown(report))):
        with atomic_output_file(out.with_suffix(suffix)) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return {**record, "report": str(out.with_suffix(".report.md"))}


def fine_tune_config(epochs: int | None, seed: int) -> DistillConfig:
    """The fine-tuning recipe with ``seed`` (and ``epochs`` when given)."""
    return replace(FINE_TUNE, seed=seed) if epochs is None else replace(FINE_TUNE, seed=seed, epochs=epochs)


def export_bundle(checkpoint: Path, out: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """The adapted checkpoint as a deployable ``vqa-student`` bundle (kvqe-export's path: ONNX fp32, verified)."""
    from kvqe.export.bundle_builder import ExportRequest, build_bundle

    return build_bundle(ExportRequest("vqa-student", out, {"model": checkpoint}), progress=progress)


