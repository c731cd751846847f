"""Calibration and validation sets built from user media with the runtime's own sampler and preprocessing.

``--calib PATH`` is a directory of videos and/or images (searched recursively), a text file listing
them (one path per line, relative to the file), or one media file. Sources are split into calibration
and validation by source (never the same source in both, unless there is only one: then its samples
alternate, and the record says so); ``--val PATH`` gives a held-out validation set instead, and every
``--calib`` source calibrates. A gate means little on a handful of samples: validation takes at least
``min_validation_sources`` sources (while calibration keeps as many) and SR draws enough crops from them
for ``min_validation_samples``. Degenerate samples (near-constant frames such as black ones) and
too-small sets are reported in the record, not silently used.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kvqe.calibration.contract import SampleSet
from kvqe.errors import BadInputError
from kvqe.files import sha256_file
from kvqe.sdk.frames import ASSUMED_FPS
from kvqe.sdk.images import IMAGE_SUFFIXES
from kvqe.sdk.preprocess import to_model_colour, vqa_geometry
from kvqe.sdk.sampling import sampling_spec, select_keyframes
from kvqe.sdk.sources import open_source
from kvqe.sdk.video_files import VIDEO_SUFFIXES
from kvqe.specs import InputSpec, Sampling

if TYPE_CHECKING:
    from kvqe.calibration.tasks import Task

Groups = list[tuple[str, list[np.ndarray]]]  # (source name, samples) per sample group
_SR_FRAME_SAMPLING = Sampling(per_second=1, max_frames=8)
_FLAT_STD = 2.0  # uint8 levels: below this a sample carries no texture (black, white, flat colour)
_MIN_SAMPLES = 8


@dataclass(frozen=True)
class SampleSettings:
    """How many samples, which seed, SR crop sizes, the validation share of the sources."""

    calib_size: int = 64
    seed: int = 0
    sr_crop: int = 64
    sr_validation_crop: int = 96
    sr_crops_per_frame: int = 4
    validation_fraction: float = 0.3
    min_validation_sources: int = 8
    min_validation_samples: int = 32
    validation_crops_per_source: int = 0  # set per export from the validation sources there are


def list_sources(path: Path) -> list[Path]:
    """Media files named by ``--calib``: a directory, a text file listing paths, or one file."""
    if not path.exists():
        raise BadInputError(f"calibration data not found: {path}")
    media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in media)
    elif path.suffix.lower() in media:
        found = [path]
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        found = [(path.parent / line.strip()).resolve() for line in lines if line.strip() and not line.startswith("#")]
        missing = [str(p) for p in found if not p.is_file()]
        if missing:
            raise BadInputError(f"{path} lists files that do not exist: {', '.join(missing[:5])}")
    if not found:
        raise BadInputError(f"{path} holds no images or videos ({', '.join(sorted(media))})")
    return found


def _frames(source: Path, sampling: Sampling | None) -> list[np.ndarray]:
    """Keyframes of a video (the runtime's sampler), or the image itself; BGR uint8."""
    with open_source(source) as frames:
        chosen = select_keyframes(frames, frames.fps or ASSUMED_FPS, sampling_spec(sampling), frames.frame_count)
    return [frame.image for frame in chosen]


def vqa_samples(source: Path, spec: InputSpec, settings: SampleSettings, rng: np.random.Generator,
                validation: bool) -> list[list[np.ndarray]]:
    """One group per video: its keyframes at model geometry (settings, rng and role do not matter)."""
    return [[vqa_geometry(frame, spec) for frame in _frames(source, spec.sampling)]]


def sr_samples(source: Path, spec: InputSpec, settings: SampleSettings, rng: np.random.Generator,
               validation: bool) -> list[list[np.ndarray]]:
    """Seeded random crops of each image / keyframe, each crop its own group."""
    size = settings.sr_validation_crop if validation else settings.sr_crop
    crops = []
    frames = _frames(source, _SR_FRAME_SAMPLING)
    per_frame = settings.sr_crops_per_frame
    if validation and settings.validation_crops_per_source:  # enough crops for the validation minimum
        per_frame = max(per_frame, -(-settings.validation_crops_per_source // len(frames)))
    for frame in frames:
        image = to_model_colour(frame, spec)
        height, width = image.shape[:2]
        if height < size or width < size:
            raise BadInputError(f"{source}: {width}x{height} is smaller than the {size}x{size} calibration crop")
        for _ in range(per_frame):
            top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
            crops.append([np.ascontiguousarray(image[top:top + size, left:left + size])])
    return crops


def _as_set(groups: Groups, spec: InputSpec) -> SampleSet:
    images = np.stack([image for _, items in groups for image in items])
    index = np.concatenate([np.full(len(items), i, np.int32) for i, (_, items) in enumerate(groups)])
    return SampleSet(images, index, tuple(name for name, _ in groups), spec)


def _flat_warnings(groups: Groups, role: str) -> list[str]:
    flat: dict[str, int] = {}
    for name, items in groups:
        count = sum(float(np.std(image)) < _FLAT_STD for image in items)
        if count:
            flat[name] = count
    return [f"{role}: {n} near-constant sample(s) (e.g. black frames) from {name}" for name, n in flat.items()]


def _subsample(groups: Groups, limit: int) -> Groups:
    """At most ``limit`` samples, spread evenly over the list (deterministic)."""
    flat = [(name, image) for name, items in groups for image in items]
    if len(flat) <= limit:
        return groups
    keep = np.linspace(0, len(flat) - 1, limit).round().astype(int)
    return [(flat[i][0], [flat[i][1]]) for i in keep]


# one media source -> its sample groups: (source, input spec, settings, rng, validation role)
Sampler = Callable[[Path, InputSpec, "SampleSettings", np.random.Generator, bool], list[list[np.ndarray]]]
# the sample groups of the one source there is -> (calibration, validation)
SourceSplit = Callable[[Groups], tuple[Groups, Groups]]


def alternate_frames(groups: Groups) -> tuple[Groups, Groups]:
    """One video's keyframes (one group): alternate frames go to calibration and validation."""
    (name, items), = groups
    return [(name, items[0::2])], [(name, items[1::2])]


def alternate_groups(groups: Groups) -> tuple[Groups, Groups]:
    """One source's groups (e.g. SR crops): alternate groups go to calibration and validation."""
    return groups[0::2], groups[1::2]


def _validation_count(sources: int, settings: SampleSettings) -> int:
    """How many of ``sources`` validate: the configured share, raised to the minimum while calibration keeps
    at least as many; none when there is only one."""
    if sources < 2:
        return 0
    return max(1, round(settings.validation_fraction * sources), min(settings.min_validation_sources, sources // 2))


def _sampled(sources: list[Path], task: Task, spec: InputSpec, settings: SampleSettings, rng: np.random.Generator,
             validation: bool) -> Groups:
    if validation:
        wanted = -(-settings.min_validation_samples // max(len(sources), 1))
        settings = replace(settings, validation_crops_per_source=wanted)
    return [(p.name, items) for p in sources for items in task.sample(p, spec, settings, rng, validation)]


def _validation_warnings(valid: Groups, settings: SampleSettings) -> list[str]:
    samples, sources = sum(len(items) for _, items in valid), len({name for name, _ in valid})
    if samples >= settings.min_validation_samples and sources >= settings.min_validation_sources:
        return []
    return [(f"validation: {samples} sample(s) from {sources} source(s); {settings.min_validation_samples} or more "
             f"from {settings.min_validation_sources} or more sources are recommended for its gates to hold on "
             "other content")]


def build_sample_sets(path: Path, task: Task, spec: InputSpec, settings: SampleSettings = SampleSettings(),
                      validation: Path | None = None) -> tuple[SampleSet, SampleSet, dict[str, Any]]:
    """Calibration and validation sets from ``path`` (or validation from ``validation``, held out by the
    user), plus the record the manifest keeps."""
    sources = list_sources(path)
    held_out = list_sources(validation) if validation is not None else []
    rng = np.random.default_rng(settings.seed)
    order = [sources[i] for i in rng.permutation(len(sources))]
    n_valid = 0 if held_out else _validation_count(len(order), settings)
    calib = _sampled(order[n_valid:], task, spec, settings, rng, False)
    valid = _sampled(held_out or order[:n_valid], task, spec, settings, rng, True)
    shared = not held_out and n_valid == 0
    if shared:  # one source: alternate its samples between the two roles
        calib, valid = task.share_source(calib)
        calib, valid = [g for g in calib if g[1]], [g for g in valid if g[1]]
    calib = _subsample(calib, settings.calib_size)
    if not calib or not valid:
        raise BadInputError(f"{path}: too little media to build both a calibration and a validation set")
    warnings = _flat_warnings(calib, "calibration") + _flat_warnings(valid, "validation")
    count = sum(len(items) for _, items in calib)
    if count < _MIN_SAMPLES:
        warnings.append(f"calibration: only {count} sample(s); {_MIN_SAMPLES} or more are recommended")
    warnings += _validation_warnings(valid, settings)
    both = {sha256_file(p) for p in sources} & {sha256_file(p) for p in held_out}
    if both:
        warnings.append(f"validation: {len(both)} file(s) of --val are also in --calib: they are not held out")
    digest = hashlib.sha256("".join(f"{p.name}:{sha256_file(p)};" for p in sources).encode()).hexdigest()
    record = {
        "settings": asdict(settings), "sources": len(sources), "sources_sha256": digest,
        "validation_shares_source": shared, "warnings": warnings,
        "calibration": {"samples": count, "sources": sorted({n for n, _ in calib})},
        "validation": {"samples": sum(len(i) for _, i in valid), "groups": len(valid),
                       "sources": sorted({n for n, _ in valid}),
                       "from": "--val (held out by the user)" if held_out else "--calib, split by source"},
    }
    return _as_set(calib, spec), _as_set(valid, spec), record


def build_validation_set(path: Path, task: Task, spec: InputSpec,
                         settings: SampleSettings = SampleSettings()) -> SampleSet:
    """Every source of ``path`` as validation data (``kvqe verify --data``)."""
    rng = np.random.default_rng(settings.seed)
    groups = [(p.name, items) for p in list_sources(path) for items in task.sample(p, spec, settings, rng, True)]
    return _as_set([g for g in groups if g[1]], spec)
