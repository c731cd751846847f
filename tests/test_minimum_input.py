"""The smallest input a VQA bundle scores, from its preprocessing (issue #34): smaller frames (1x1, 16x16)
or a video that ends before its first keyframe are bad input (exit 2), and ``kvqe gate`` rejects them with
reason ``unscorable`` (exit 5), never ``pass``."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from support import needs_ffmpeg

import kvqe
from kvqe.cli import main
from kvqe.errors import UnscorableError
from kvqe.sdk.preprocess import minimum_side
from kvqe.specs import InputSpec


def _video(folder: Path, size: str, seconds: float = 1.0, name: str = "") -> Path:
    out = folder / (name or f"v{size}.mkv")
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=s={size}:d={seconds}:r=25",
                    "-c:v", "ffv1", str(out)], check=True)
    return out


def _image(folder: Path, side: int) -> Path:
    out = folder / f"i{side}.png"
    cv2.imwrite(str(out), np.random.default_rng(side).integers(0, 256, (side, side, 3), np.uint8))
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("small")
    return {"video 1x1": _video(folder, "1x1"), "video 16x16": _video(folder, "16x16"),
            "image 1x1": _image(folder, 1), "image 16x16": _image(folder, 16),
            "video of 5 frames": _video(folder, "64x64", 0.2, "short.mkv")}


def test_the_minimum_comes_from_the_preprocessing() -> None:
    spec = kvqe.load("vqa").input_spec
    assert spec.fragments is not None and minimum_side(spec) == spec.fragments.patch == 32
    crop = InputSpec.from_json({"colour_order": "RGB", "value_range": [0, 1], "mean": [0, 0, 0], "std": [1, 1, 1],
                                "resize": {"short_side": 224}, "crop": {"height": 224, "width": 224}})
    assert minimum_side(crop) == 28


@needs_ffmpeg
@pytest.mark.parametrize("kind", ["video 1x1", "video 16x16", "image 1x1", "image 16x16", "video of 5 frames"])
def test_below_the_minimum_is_bad_input_and_the_gate_rejects_it(small: dict[str, Path], kind: str) -> None:
    source = str(small[kind])
    with pytest.raises(UnscorableError, match="unscorable"):
        kvqe.load("vqa").score(source)
    scored = CliRunner().invoke(main, ["score", source, "--json"])
    assert scored.exit_code == 2 and "unscorable" in json.loads(scored.stdout)["error"], scored.output
    gated = CliRunner().invoke(main, ["gate", source, "--min-score", "0", "--json"])
    assert gated.exit_code == 5, gated.output
    record = json.loads(gated.stdout)
    assert (record["decision"], record["reason"], record["score"]) == ("reject", "unscorable", None)
    assert "unscorable" in record["detail"]
    plain = CliRunner().invoke(main, ["gate", source, "--min-score", "0"])
    assert plain.exit_code == 5 and "\treject\tunscorable" in plain.stdout


@needs_ffmpeg
def test_the_minimum_itself_is_scored(tmp_path: Path) -> None:
    result = kvqe.load("vqa").score(str(_video(tmp_path, "32x32", 0.6)))
    assert result.frames == 1 and 0 <= result.score <= 100
