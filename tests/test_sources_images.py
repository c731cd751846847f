"""Image sources: arrays and files, EXIF orientation, the grey, 16-bit and CMYK files kvqe converts (issue #34)
and the images it refuses (alpha)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner
from PIL import Image

import kvqe
from kvqe.calibration.data import SampleSettings, vqa_samples
from kvqe.cli import main
from kvqe.errors import BadInputError
from kvqe.sdk.images import IMAGE_SUFFIXES, decode_image, read_image
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


def test_an_image_with_alpha_is_refused(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    path = tmp_path / "bad.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA))
    with pytest.raises(BadInputError, match="does not drop alpha") as info:
        open_source(path)
    assert str(path) in str(info.value)


def _cmyk(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).convert("CMYK").save(path)


CONVERTED = {  # file name -> (writer of the astronaut's first 64x96 pixels, the conversion named)
    "grey.png": (lambda p, bgr: cv2.imwrite(str(p), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)), "grey to BGR"),
    "deep.png": (lambda p, bgr: cv2.imwrite(str(p), bgr.astype(np.uint16) * 257), "16-bit to 8-bit"),
    "deep-grey.tif": (lambda p, bgr: cv2.imwrite(str(p), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257),
                      "grey 16-bit to 8-bit BGR"),
    "cmyk.tif": (lambda p, bgr: _cmyk(p, bgr[..., ::-1]), "CMYK to BGR"),
    "cmyk.jpg": (lambda p, bgr: _cmyk(p, bgr[..., ::-1]), "CMYK to BGR"),
}


def _expected(name: str, bgr: np.ndarray) -> np.ndarray:
    """What a converted file holds: grey as BGR; the colour (Pillow's RGB -> CMYK -> RGB is exact)."""
    if name.startswith(("grey", "deep-grey")):
        return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return bgr


@pytest.mark.parametrize("name", sorted(CONVERTED))
def test_grey_16_bit_and_cmyk_files_are_converted_to_8_bit_bgr(tmp_path: Path, astronaut_bgr: np.ndarray,
                                                                name: str) -> None:
    bgr = np.ascontiguousarray(astronaut_bgr[:64, :96])
    write, conversion = CONVERTED[name]
    path = tmp_path / name
    write(path, bgr)
    image, named = decode_image(path)
    assert named == conversion and image.dtype == np.uint8 and image.shape == (64, 96, 3)
    tolerance = 40 if name.endswith(".jpg") else 0  # JPEG is lossy
    assert np.abs(image.astype(int) - _expected(name, bgr).astype(int)).mean() <= tolerance / 4
    assert np.array_equal(read_image(path), image)
    with open_source(path) as source:
        assert source.conversion == conversion and np.array_equal(next(iter(source)).image, image)


def test_a_16_bit_value_is_rounded_to_8_bits(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((4, 4, 3), 40000, np.uint16))
    assert decode_image(path)[0][0, 0].tolist() == [156] * 3  # 40000 / 257 = 155.6


def test_unreadable_and_missing_images(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BadInputError, match="cannot read .*garbage.png as an image"):
        open_source(garbage)
    with pytest.raises(BadInputError, match="no such file: .*missing.jpg"):
        open_source(tmp_path / "missing.jpg")
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} == IMAGE_SUFFIXES


def test_score_enhance_and_calib_convert_and_say_so(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, (write, _) in CONVERTED.items():
        write(folder / name, np.ascontiguousarray(astronaut_bgr[:64, :96]))
    scored = CliRunner().invoke(main, ["score", str(folder), "--json"])
    assert scored.exit_code == 0, scored.output
    records = {Path(r["source"]).name: r for r in map(json.loads, scored.stdout.splitlines())}
    assert {name: record["conversion"] for name, record in records.items()} == {
        name: conversion for name, (_, conversion) in CONVERTED.items()}
    enhanced = CliRunner().invoke(main, ["enhance", str(folder / "cmyk.tif"), "-o", str(tmp_path / "x4.png"),
                                         "--json"])
    assert enhanced.exit_code == 0, enhanced.output
    assert json.loads(enhanced.stdout)["conversion"] == "CMYK to BGR"
    assert cv2.imread(str(tmp_path / "x4.png")).shape == (256, 384, 3)
    spec = kvqe.load("vqa").input_spec
    for name in CONVERTED:  # an export's --calib folder is read by the same reader
        (group,) = vqa_samples(folder / name, spec, SampleSettings(), np.random.default_rng(0), False)
        assert len(group) == 1 and group[0].dtype == np.uint8
