"""Bundle reading, hash verification and atomic writes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import kvqe
from kvqe.bundle import read_bundle
from kvqe.errors import BundleError
from kvqe.files import atomic_output_dir, atomic_output_file
from kvqe.sdk.loader import embedded_bundle_path


@pytest.fixture
def sr_copy(tmp_path: Path) -> Path:
    target = tmp_path / "sr"
    shutil.copytree(embedded_bundle_path("sr"), target)
    return target


def flip_one_byte(path: Path, offset: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_embedded_bundle_verifies_and_records_provenance() -> None:
    bundle = read_bundle(embedded_bundle_path("sr"))
    assert bundle.task == "sr" and bundle.model_name == "realesr-animevideov3"
    assert bundle.verify_all() == {"model.fp32.onnx": None}
    assert "BSD-3-Clause" in bundle.manifest["licence"]
    weights = bundle.manifest["weights"]
    assert "REALESRGAN_ANIMAVIDEOV3_UP4X" in weights["source"]
    assert all(len(f["sha256"]) == 64 for f in weights["files"].values())
    (artifact,) = bundle.artifacts
    assert artifact.record["accuracy"]["max_abs_diff"] <= 1e-4
    assert artifact.record["export"]["opset"] == 18 and artifact.record["producer"]["torch"].startswith("2.13")


def test_one_changed_byte_is_refused_naming_the_file(sr_copy: Path) -> None:
    flip_one_byte(sr_copy / "model.fp32.onnx")
    with pytest.raises(BundleError, match=r"model\.fp32\.onnx: sha256 mismatch"):
        kvqe.load(sr_copy)
    assert read_bundle(sr_copy).verify_all()["model.fp32.onnx"] is not None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "model.fp32.onnx").unlink(), "missing from the bundle"),
    ],
)
def test_broken_bundles_give_plain_errors(sr_copy: Path, mutate, message: str) -> None:
    mutate(sr_copy)
    with pytest.raises(BundleError, match=message):
        kvqe.load(sr_copy)


def test_manifest_fields_are_checked(sr_copy: Path) -> None:
    manifest = json.loads((sr_copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (sr_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99"):
        read_bundle(sr_copy)
    manifest["schema_version"] = 1
    manifest["artifacts"][0]["file"] = "../escape.onnx"
    (sr_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="plain name"):
        read_bundle(sr_copy)


def test_missing_artifact_for_requested_backend_lists_what_exists() -> None:
    with pytest.raises(BundleError, match="onnxruntime/fp32"):
        kvqe.load("sr", precision="int8")


def test_atomic_dir_leaves_nothing_on_failure_and_keeps_the_old_bundle(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(target) as stage:
        (stage / "half.onnx").write_bytes(b"x")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_output_dir(target) as stage:
        (stage / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(target) as stage:
        (stage / "a").write_text("new")
        raise KeyboardInterrupt
    assert (target / "a").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out"]
    with atomic_output_dir(target) as stage:
        (stage / "b").write_text("replaced")
    assert [p.name for p in target.iterdir()] == ["b"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_file_appears_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    with pytest.raises(ValueError), atomic_output_file(target) as tmp:
        tmp.write_bytes(b"partial")
        raise ValueError
    assert list(tmp_path.iterdir()) == []
    with atomic_output_file(target) as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and list(tmp_path.iterdir()) == [target]
