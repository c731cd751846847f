"""Errors a user causes are KvqeErrors with their exit code, never a MemoryError, TypeError or RuntimeError: a
manifest claiming an enormous file, a backend option the backend lacks, a model used after close(), a
manifest key given twice, an SR output range no picture fits in."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kvqe
from kvqe.cli import main
from kvqe.errors import BadInputError, BundleError, KvqeError, ModelClosedError
from kvqe.sdk.loader import embedded_bundle_path

PHOTO = Path(__file__).resolve().parents[1] / "kvqe" / "samples" / "astronaut.png"


def _copy(task: str, tmp_path: Path, edit: Callable[[str], str]) -> Path:
    bundle = tmp_path / task
    shutil.copytree(embedded_bundle_path(task), bundle)
    manifest = bundle / "manifest.json"
    manifest.write_text(edit(manifest.read_text()))
    return bundle


def _claim_bytes(size: int) -> Callable[[str], str]:
    """The main artifact's ``bytes`` set to ``size`` (the file on disk is unchanged)."""

    def edit(text: str) -> str:
        manifest = json.loads(text)
        manifest["artifacts"][0]["bytes"] = size
        return json.dumps(manifest)

    return edit


@pytest.mark.parametrize("task, command", [("vqa", ["info", "{bundle}"]),
                                           ("sr", ["enhance", str(PHOTO), "-o", "{tmp}/out.png", "--bundle",
                                                   "{bundle}"])])
def test_a_manifest_claiming_an_exabyte_file_is_bad_input(tmp_path: Path, task: str, command: list[str]) -> None:
    bundle = _copy(task, tmp_path, _claim_bytes(10**18))
    args = [a.replace("{bundle}", str(bundle)).replace("{tmp}", str(tmp_path)) for a in command]
    for as_json in ([], ["--json"]):
        run = CliRunner().invoke(main, [*args, *as_json])
        assert run.exit_code == 2, run.output
        assert "the manifest says 1000000000000000000" in run.output and "internal error" not in run.output
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(BundleError, match="the manifest says 1000000000000000000"):
        kvqe.load(bundle)


def test_an_option_the_backend_lacks_is_named() -> None:
    with pytest.raises(BadInputError, match=r"onnxruntime backend has no option 'performance_hint'.*threads"):
        kvqe.load("sr", backend="onnxruntime", performance_hint="THROUGHPUT")


def test_every_call_after_close_says_the_model_is_closed() -> None:
    vqa, sr = kvqe.load("vqa"), kvqe.load("sr")
    vqa.close()
    sr.close()
    image = np.zeros((32, 32, 3), np.uint8)
    calls: list[Callable[[], object]] = [
        lambda: vqa.score(image), lambda: list(vqa.stream([image])), lambda: sr.enhance(image),
        lambda: sr.enhance_video([image], "-"), lambda: vqa.runner.run_single(np.zeros((1, 3, 8, 8), np.float32)),
        lambda: vqa.runner.load()]
    for call in calls:
        with pytest.raises(ModelClosedError, match="closed") as refused:
            call()
        assert isinstance(refused.value, KvqeError) and refused.value.exit_code == 2


def _duplicate_key(text: str) -> str:
    """An artifact marked undeployable, then deployable: a reader keeping the last value runs it."""
    return text.replace('"deployable": true,', '"deployable": false, "deployable": true,', 1)


def test_a_manifest_key_given_twice_is_refused(tmp_path: Path) -> None:
    bundle = _copy("vqa", tmp_path, _duplicate_key)
    assert (bundle / "manifest.json").read_text().count('"deployable"') == 2
    with pytest.raises(BundleError, match="the key 'deployable' appears twice"):
        kvqe.load(bundle)
    run = CliRunner().invoke(main, ["info", str(bundle)])
    assert run.exit_code == 2 and "appears twice" in run.output


@pytest.mark.parametrize("value_range", [[0, 1e300], [-1e6, 1], [0, 1e-9]])
def test_an_sr_output_range_no_picture_fits_is_refused_at_load(tmp_path: Path, value_range: list[float]) -> None:
    def edit(text: str) -> str:
        manifest = json.loads(text)
        manifest["output"]["value_range"] = value_range
        return json.dumps(manifest)

    bundle = _copy("sr", tmp_path, edit)
    with pytest.raises(BundleError, match=r"output.value_range: .* is not a pixel value range"):
        kvqe.load(bundle)
