"""The SDK on real media: enhance()/enhance_video() with the embedded bundle, score()/stream() with an
exported VQA bundle, compared with the PyTorch models they came from."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support import BIKES, CARPHONE, Exported, make_clip, needs_ffmpeg, psnr

import kvqe
from kvqe.errors import BadInputError, BundleError
from kvqe.models.registry import get_model
from kvqe.sdk import sources
from kvqe.sdk.preprocess import preprocess_vqa_frame
from kvqe.sdk.results import Sampling
from kvqe.sdk.sources import open_source

_VIDEO_CAPTURE = cv2.VideoCapture


@pytest.fixture(scope="module")
def sr():
    return kvqe.load("sr")


@pytest.fixture(scope="module")
def vqa(tiny_vqa: Exported):
    """The tiny VQA bundle: the behaviour tests below hold for any bundle of the student's card."""
    return kvqe.load(tiny_vqa.bundle)


def test_tasks_are_not_mixed(sr, vqa, astronaut_bgr) -> None:
    with pytest.raises(BadInputError, match="score\\(\\) needs a vqa model"):
        sr.score(astronaut_bgr)
    with pytest.raises(BadInputError, match="enhance\\(\\) needs a sr model"):
        vqa.enhance(astronaut_bgr)
    with pytest.raises(BadInputError, match="enhance_video\\(\\) needs a sr model"):
        vqa.enhance_video(CARPHONE, "out.mp4")


def _never_run(batch: np.ndarray) -> np.ndarray:
    raise AssertionError("the model ran before the output path was checked")


@needs_ffmpeg
def test_unusable_output_paths_are_refused_before_inference(sr, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    clip = make_clip(tmp_path, CARPHONE, frames=3, size=(64, 48), fps=15)
    before = clip.read_bytes()
    monkeypatch.setattr(sr.runner, "run_single", _never_run)
    with pytest.raises(BadInputError, match="must not overwrite the input"):
        sr.enhance_video(clip, clip)
    with pytest.raises(BadInputError, match="must not overwrite the input"):
        sr.enhance_video(str(clip), tmp_path / "." / clip.name)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(BadInputError, match="is not a directory"):
        sr.enhance_video(clip, tmp_path / "notes.txt" / "out.mp4")
    with pytest.raises(BadInputError, match="is a directory"):
        (tmp_path / "out.mp4").mkdir()
        sr.enhance_video(clip, tmp_path / "out.mp4")
    assert clip.read_bytes() == before


def test_non_finite_model_output_is_an_error_never_a_result(sr, vqa, astronaut_bgr,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vqa.runner, "run_single", lambda batch: np.full((batch.shape[0], 1), np.nan, np.float32))
    with pytest.raises(BundleError, match="produced non-finite values.*bundle may be corrupt"):
        vqa.score(CARPHONE)
    with pytest.raises(BundleError, match="non-finite"):
        next(vqa.stream(CARPHONE))
    monkeypatch.setattr(sr.runner, "run_single", lambda batch: np.full((1, 3, batch.shape[2] * 4, batch.shape[3] * 4),
                                                                np.inf, np.float32))
    with pytest.raises(BundleError, match="produced non-finite values"):
        sr.enhance(np.ascontiguousarray(astronaut_bgr[:32, :32]))


class _BrokenCapture:
    """A capture whose decoder fails after one frame, as OpenCV does on some damaged streams."""

    def __init__(self, *args: object) -> None:
        self._capture = _VIDEO_CAPTURE(str(CARPHONE))
        self._reads = 0

    def read(self) -> tuple[bool, np.ndarray]:
        self._reads += 1
        if self._reads > 1:
            raise cv2.error("OpenCV(5.1.0) cap_ffmpeg: decoder failed")
        return self._capture.read()

    def __getattr__(self, name: str) -> object:
        return getattr(self._capture, name)


def test_decoder_exceptions_are_bad_input_naming_the_source(vqa, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources.cv2, "VideoCapture", _BrokenCapture)
    with pytest.raises(BadInputError, match=f"{CARPHONE}: reading frame 1 failed: error: .*decoder failed"):
        vqa.score(CARPHONE)


def test_enhance_matches_the_torch_model_with_official_weights(sr, coffee_bgr) -> None:
    image = np.ascontiguousarray(coffee_bgr[100:164, 200:280])
    out = sr.enhance(image)
    assert out.shape == (256, 320, 3) and out.dtype == np.uint8
    entry = get_model("realesr-animevideov3")
    module = entry.factory().eval()
    entry.load_weights(module, {})
    rgb = torch.from_numpy(image[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255)[None]
    with torch.no_grad():
        reference = module(rgb)[0].clamp(0, 1).numpy().transpose(1, 2, 0)[:, :, ::-1]
    reference = np.rint(reference * 255).astype(np.uint8)
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "image",
    [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)],
    ids=["grey", "rgba", "float"],
)
def test_enhance_refuses_non_bgr_images(sr, image: np.ndarray) -> None:
    with pytest.raises(BadInputError, match="3-channel|uint8|BGR"):
        sr.enhance(image)


@needs_ffmpeg
def test_enhance_video_keeps_fps_and_frame_count(sr, tmp_path: Path) -> None:
    clip = make_clip(tmp_path, CARPHONE, frames=6, size=(64, 48), fps=15)
    out = tmp_path / "x4.mp4"
    done: list[int] = []
    result = sr.enhance_video(clip, out, progress=lambda n, total: done.append(n))
    assert (result.frames, result.out_width, result.out_height, result.fps, result.frame_rate) == (
        6, 256, 192, 15.0, "15/1")
    assert done == [1, 2, 3, 4, 5, 6]
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)
    written = []
    while (read := capture.read())[0]:
        written.append(read[1])
    assert len(written) == 6 and written[0].shape == (192, 256, 3)
    with open_source(clip) as frames:
        first = next(iter(frames)).image
    # the model's frame, written 8-bit 4:2:0 (the default): 38.4 dB from it measured on this thumbnail, where a
    # bicubic upscale is 27.8 dB from it (the codecs' defaults on real content: tests/test_video_out.py)
    assert psnr(written[0], sr.enhance(first)) > 36


def test_enhance_video_failure_leaves_no_output(sr, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(BadInputError):
        sr.enhance_video(bad, tmp_path / "out.mp4")
    with pytest.raises(BadInputError, match="container"):
        sr.enhance_video(CARPHONE, tmp_path / "out.xyz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_score_equals_the_torch_student_on_keyframes(any_vqa: Exported) -> None:
    """Parity with torch through the whole runtime path, on the tiny bundle and on the full-size Swin-T."""
    vqa, student = kvqe.load(any_vqa.bundle), any_vqa.torch_module()
    result = vqa.score(CARPHONE)  # 120 frames at 29.97 fps: keyframes 14, 44, 74, 104
    capture = cv2.VideoCapture(str(CARPHONE))
    frames = [capture.read()[1] for _ in range(105)]
    batch = torch.from_numpy(np.stack([preprocess_vqa_frame(frames[i], vqa.input_spec) for i in (14, 44, 74, 104)]))
    with torch.no_grad():
        expected = student(batch).reshape(-1).numpy()
    assert result.frames == 4 and result.source == str(CARPHONE)
    assert result.frame_indices == [14, 44, 74, 104]
    assert result.frame_times == pytest.approx([i * 1001 / 30000 for i in (14, 44, 74, 104)])
    assert (result.duration_s, result.width, result.height, result.codec) == (pytest.approx(4.004), 176, 144, "h264")
    assert result.sampling == Sampling(per_second=1.0, max_frames=8, how="sequential")
    np.testing.assert_allclose(result.frame_scores, expected, atol=1e-4)
    padded = list(expected) + [expected[-1]] * 4
    assert result.score == pytest.approx(float(np.mean(padded)), abs=1e-4)


def test_score_accepts_capture_iterable_and_image(vqa, astronaut_bgr) -> None:
    from_path = vqa.score(CARPHONE)
    capture = cv2.VideoCapture(str(CARPHONE))
    assert vqa.score(capture).score == pytest.approx(from_path.score, abs=1e-6)
    capture.release()
    with open_source(CARPHONE) as frames:
        images = [f.image for f in frames]
    from_list = vqa.score(images, fps=30000 / 1001)
    assert from_list.frame_scores == pytest.approx(from_path.frame_scores, abs=1e-6)
    single = vqa.score(astronaut_bgr)
    assert single.frames == 1 and single.score == pytest.approx(single.frame_scores[0], abs=1e-6)


def test_stream_windows_agree_with_whole_video_keyframes(vqa) -> None:
    whole = vqa.score(BIKES, max_frames=10)  # 250 frames at 25 fps: keyframes 12, 37, ... (10 of them)
    assert whole.frame_indices == [12, 37, 62, 87, 112, 137, 162, 187, 212, 237]
    segments = list(vqa.stream(BIKES, window_s=2.0))
    assert [(s.start_s, s.end_s, s.frames) for s in segments] == [
        (0.0, 2.0, 2), (2.0, 4.0, 2), (4.0, 6.0, 2), (6.0, 8.0, 2), (8.0, 10.0, 2)]
    for i, segment in enumerate(segments[:4]):
        assert segment.score == pytest.approx(np.mean(whole.frame_scores[2 * i:2 * i + 2]), abs=1e-5)


def test_score_bad_sources(vqa, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        vqa.score(tmp_path / "missing.mp4")
    with pytest.raises(BadInputError, match="no frames"):
        vqa.score([])
    with pytest.raises(BadInputError, match="window_s"):
        next(vqa.stream(CARPHONE, window_s=0))
    with pytest.raises(BadInputError, match="max_frames must be an integer from 1"):
        vqa.score(CARPHONE, max_frames=0)
    with pytest.raises(BadInputError, match="per_second must be a finite number above 0"):
        next(vqa.stream(CARPHONE, per_second=-1))


def _coordinate_frame(height: int, width: int) -> np.ndarray:
    """A BGR frame whose pixels name their place: B = row % 256, G = column % 256, R = the high parts."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows % 256, cols % 256, 16 * (rows // 256) + cols // 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize(("size", "augment"), [((240, 320), False), ((540, 960), False), ((240, 320), True)])
def test_fragments_are_native_crops_one_per_grid_cell(size: tuple[int, int], augment: bool) -> None:
    """The student's mosaic: 14 x 14 native-resolution 32 x 32 crops, one per grid cell, centred on the cell's
    centre (cells smaller than a patch, as on a 240x320 frame, make them overlap: no enlarging) or, when
    augmented, on a random point of the cell; always inside the frame. Channels 3-5: the frame resized."""
    from kvqe.sdk.preprocess import vqa_geometry

    spec = get_model("vqa-student").card.input
    assert spec.fragments is not None
    grid, patch = spec.fragments.grid, spec.fragments.patch
    height, width = size
    frame = _coordinate_frame(height, width)
    image = vqa_geometry(frame, spec, np.random.default_rng(0) if augment else None)
    assert image.shape == (grid * patch, grid * patch, 6)
    rgb = frame[:, :, ::-1]
    moved = 0
    for row in range(grid):
        cell_top, cell_bottom = row * height // grid, (row + 1) * height // grid
        for col in range(grid):
            cell_left, cell_right = col * width // grid, (col + 1) * width // grid
            crop = image[row * patch:(row + 1) * patch, col * patch:(col + 1) * patch, :3]
            high = int(crop[0, 0, 0])
            top, left = int(crop[0, 0, 2]) + 256 * (high // 16), int(crop[0, 0, 1]) + 256 * (high % 16)
            np.testing.assert_array_equal(crop, rgb[top:top + patch, left:left + patch])  # native, not resized
            centred = (min(max(int((cell_top + cell_bottom - patch) / 2), 0), height - patch),
                       min(max(int((cell_left + cell_right - patch) / 2), 0), width - patch))
            if augment:  # the patch centre lies in the cell (or the patch touches the frame's edge)
                assert top in (0, height - patch) or cell_top <= top + patch / 2 <= cell_bottom
                assert left in (0, width - patch) or cell_left <= left + patch / 2 <= cell_right
                moved += (top, left) != centred
            else:
                assert (top, left) == centred
    assert moved > grid * grid // 2 if augment else moved == 0
    np.testing.assert_array_equal(image[:, :, 3:], cv2.resize(rgb, (grid * patch, grid * patch),
                                                              interpolation=cv2.INTER_AREA))
    tiny = vqa_geometry(_coordinate_frame(20, 24), spec)  # smaller than one patch: enlarged to fit it
    assert tiny.shape == image.shape
