"""Image sources: arrays and files, EXIF orientation, and images kvqe refuses rather than converts."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from kvqe.errors import BadInputError
from kvqe.sdk.images import IMAGE_SUFFIXES, read_image
from kvqe.sdk.sources import open_source


def test_image_array_and_file(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    bgr = astronaut_bgr
    with open_source(bgr) as source:
        assert (source.name, source.is_image, source.frame_count, source.fps) == ("<image>", True, 1, None)
        (frame,) = list(source)
    assert frame.index == 0 and frame.time_s == 0.0 and np.array_equal(frame.image, bgr)
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), bgr)
    assert np.array_equal(read_image(path), bgr)
    with open_source(path) as source:
        assert source.is_image and source.name == str(path)
        (frame,) = list(source)
    assert np.array_equal(frame.image, bgr)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    photo = pil.fromarray(skimage.data.astronaut()[:, :300])
    exif = photo.getexif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    photo.save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == (300, 512, 3)
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored is not None and np.array_equal(image, cv2.rotate(stored, cv2.ROTATE_90_CLOCKWISE))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda bgr: skimage.data.camera(), "does not invent colour"),
        (lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "does not drop alpha"),
        (lambda bgr: bgr.astype(np.uint16) * 257, r"dtype uint16.*8 bits"),
    ],
    ids=["grey", "rgba", "16bit"],
)
def test_image_files_refused(tmp_path: Path, astronaut_bgr: np.ndarray, make, match: str) -> None:
    path = tmp_path / "bad.png"
    assert cv2.imwrite(str(path), make(astronaut_bgr))
    with pytest.raises(BadInputError, match=match) as info:
        open_source(path)
    assert str(path) in str(info.value)


def test_unreadable_and_missing_images(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BadInputError, match="cannot read .*garbage.png as an image"):
        open_source(garbage)
    with pytest.raises(BadInputError, match="no such file: .*missing.jpg"):
        open_source(tmp_path / "missing.jpg")
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} == IMAGE_SUFFIXES
