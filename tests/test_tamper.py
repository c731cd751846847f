"""Tampering with any file a runtime opens is caught before a parser reads it, for every bundle format.

One small bundle per format, built from the embedded SR model: ONNX (with the validation set), ONNX with
external data, OpenVINO IR (.xml + .bin), TensorRT (a stand-in engine and its build record: verification
comes before the backend is needed, so this runs where TensorRT is missing). Each file is flipped,
truncated, extended, replaced by another file of the bundle and deleted; each companion is also dropped
from the manifest. Every case must make ``kvqe.load`` raise a BundleError naming the file, and ``kvqe
info --json`` (verified false) and ``kvqe verify`` exit 2 naming it.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner, Result

import kvqe
from kvqe.bundle import MANIFEST, read_bundle, write_manifest
from kvqe.cli import main
from kvqe.errors import BackendUnavailableError, BundleError
from kvqe.files import sha256_file
from kvqe.sdk.loader import embedded_bundle_path

ONNX = "model.fp32.onnx"
VALIDATION = "validation.npz"
# bundle -> (backend its artifact under test runs on, the files a runtime opens for it)
BUNDLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnx": ("onnxruntime", (ONNX, VALIDATION)),
    "onnx-external": ("onnxruntime", (ONNX, "model.fp32.onnx.data")),
    "openvino": ("openvino", ("model.openvino.fp32.xml", "model.openvino.fp32.bin")),
    "tensorrt": ("tensorrt", ("model.tensorrt.fp32.engine", "model.tensorrt.fp32.json")),
}
COMPANIONS = {"onnx-external": "model.fp32.onnx.data", "openvino": "model.openvino.fp32.bin",
              "tensorrt": "model.tensorrt.fp32.json"}


def _entry(path: Path) -> dict[str, object]:
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _add_artifact(bundle: Path, backend: str, files: list[Path], **fields: object) -> None:
    """Add an fp32 artifact of ``backend`` (main file first) to the bundle's manifest, as the exporter would."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    main_file, *extra = files
    manifest["artifacts"].append({"backend": backend, "precision": "fp32", **_entry(main_file),
                                  "extra_files": [_entry(p) for p in extra], "deployable": True, **fields})
    write_manifest(bundle, manifest)


def _onnx_external(bundle: Path) -> None:
    """The SR model re-saved with its weights as external data, the manifest listing both files."""
    model = onnx.load(str(bundle / ONNX))
    onnx.save_model(model, str(bundle / ONNX), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{ONNX}.data", size_threshold=0)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["artifacts"][0].update(_entry(bundle / ONNX), extra_files=[_entry(bundle / f"{ONNX}.data")])
    write_manifest(bundle, manifest)


def _openvino(bundle: Path) -> None:
    ov = pytest.importorskip("openvino")
    xml = bundle / "model.openvino.fp32.xml"
    ov.save_model(ov.convert_model(str(bundle / ONNX)), str(xml), compress_to_fp16=False)
    _add_artifact(bundle, "openvino", [xml, xml.with_suffix(".bin")], format="openvino",
                  runtime={"inference_precision": "f32"})


def _tensorrt(bundle: Path) -> None:
    """A stand-in engine and a build record of the exporter's form (verification never parses either)."""
    engine = bundle / "model.tensorrt.fp32.engine"
    engine.write_bytes(bytes(range(256)) * 64)
    fingerprint = {"gpu": "NVIDIA L4", "compute_capability": "8.9", "tensorrt": "10.13.0"}
    record = {"builder": "tensorrt", "tensorrt": "10.13.0", "fingerprint": fingerprint, "strongly_typed": True,
              "onnx_sha256": sha256_file(bundle / ONNX), "profiles": [{"input": [[1, 3, 16, 16], [1, 3, 276, 276],
                                                                                 [1, 3, 276, 276]]}],
              "workspace_bytes": 1 << 30, "cache_key": "nvidia-l4-sm89-trt10.13.0-0123456789abcdef",
              "engine_bytes": engine.stat().st_size, "max_tile": 256}
    engine.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    _add_artifact(bundle, "tensorrt", [engine, engine.with_suffix(".json")], format="tensorrt", export=record,
                  runtime={})


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One intact bundle per format."""
    root = tmp_path_factory.mktemp("templates")
    built = {}
    for name, extend in (("onnx", None), ("onnx-external", _onnx_external), ("openvino", _openvino),
                         ("tensorrt", _tensorrt)):
        built[name] = root / name
        shutil.copytree(embedded_bundle_path("sr"), built[name])
        if extend is not None:
            extend(built[name])
    return built


def _copy(templates: dict[str, Path], name: str, tmp_path: Path) -> Path:
    bundle = tmp_path / name
    shutil.copytree(templates[name], bundle)
    return bundle


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _partner(name: str) -> str:
    """Another file of the same bundle to put in ``name``'s place."""
    return ONNX if name == VALIDATION else VALIDATION


TAMPERS: dict[str, Callable[[Path], None]] = {
    "flip": _flip,
    "truncate": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "append": lambda p: p.write_bytes(p.read_bytes() + b"\0"),
    "swap": lambda p: p.write_bytes((p.parent / _partner(p.name)).read_bytes()),
    "delete": lambda p: p.unlink(),
}
CASES = [(bundle, name, tamper) for bundle, (_, names) in BUNDLES.items() for name in names for tamper in TAMPERS
         if not (tamper == "swap" and name == _partner(name))]


def _invoke(*args: str) -> tuple[Result, list[dict]]:
    result = CliRunner().invoke(main, [*args, "--json"])
    return result, [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _assert_refused(bundle: Path, backend: str, name: str, *, loads: bool = False) -> None:
    """``kvqe.load`` (unless the file is one loading never reads), ``kvqe info`` and ``kvqe verify`` refuse
    ``bundle`` naming ``name``."""
    if not loads:
        with pytest.raises(BundleError, match=name.replace(".", r"\.")):
            kvqe.load(bundle, backend=backend)
    info, records = _invoke("info", str(bundle))
    assert info.exit_code == 2, info.output
    assert records[0]["verified"] is False and name in records[-1]["error"], records
    assert "Traceback" not in info.output
    verify, records = _invoke("verify", str(bundle))
    assert verify.exit_code == 2, verify.output
    assert name in records[-1]["error"], records


def test_intact_bundles_verify_and_load(templates: dict[str, Path]) -> None:
    for name, (backend, files) in BUNDLES.items():
        bundle = read_bundle(templates[name])
        checks = bundle.verify_all()
        assert set(files) <= set(checks) and all(v is None for v in checks.values()), checks
        if backend == "tensorrt":  # verified: only the missing GPU stack stops it
            with pytest.raises(BackendUnavailableError):
                kvqe.load(templates[name], backend=backend)
        else:
            kvqe.load(templates[name], backend=backend).close()


@pytest.mark.parametrize(("bundle_name", "name", "tamper"), CASES, ids=[f"{b}:{n}:{t}" for b, n, t in CASES])
def test_a_tampered_file_is_refused_by_name(templates: dict[str, Path], tmp_path: Path, bundle_name: str,
                                            name: str, tamper: str) -> None:
    bundle = _copy(templates, bundle_name, tmp_path)
    TAMPERS[tamper](bundle / name)
    checks = read_bundle(bundle).verify_all()
    assert checks[name] is not None and all(v is None for k, v in checks.items() if k != name), checks
    _assert_refused(bundle, BUNDLES[bundle_name][0], name, loads=name == VALIDATION)


def test_validation_data_is_not_read_by_loading_but_by_verify(templates: dict[str, Path], tmp_path: Path) -> None:
    """Loading reads only the files it runs; the validation set is checked by ``info`` and ``verify``."""
    bundle = _copy(templates, "onnx", tmp_path)
    _flip(bundle / VALIDATION)
    kvqe.load(bundle).close()


@pytest.mark.parametrize("bundle_name", sorted(COMPANIONS))
def test_a_companion_the_manifest_does_not_list_is_refused(templates: dict[str, Path], tmp_path: Path,
                                                            bundle_name: str) -> None:
    bundle = _copy(templates, bundle_name, tmp_path)
    manifest = json.loads((bundle / MANIFEST).read_text())
    (entry,) = [a for a in manifest["artifacts"] if a.get("extra_files")]
    entry["extra_files"] = []
    write_manifest(bundle, manifest)
    companion = COMPANIONS[bundle_name]
    assert "does not list" in str(read_bundle(bundle).verify_all()[companion])
    _assert_refused(bundle, BUNDLES[bundle_name][0], companion)


def _manifest_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        manifest = json.loads((bundle / MANIFEST).read_text())
        edit(manifest)
        (bundle / MANIFEST).write_text(json.dumps(manifest))
    return apply


MANIFEST_TAMPERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "flip": (lambda p: _flip_at(p / MANIFEST, 0), "not valid JSON"),
    "truncate": (lambda p: (p / MANIFEST).write_bytes((p / MANIFEST).read_bytes()[:-40]), "not valid JSON"),
    "append": (lambda p: (p / MANIFEST).write_bytes((p / MANIFEST).read_bytes() + b"x"), "not valid JSON"),
    "swap": (lambda p: shutil.copyfile(p / "report.json", p / MANIFEST), "model: 'realesr-animevideov3' is not of"),
    "delete": (lambda p: (p / MANIFEST).unlink(), "manifest.json is missing"),
    "sha256 not hex": (_manifest_edit(lambda m: m["artifacts"][0].update(sha256="Z" * 64)), "artifacts[0].sha256"),
    "bytes negative": (_manifest_edit(lambda m: m["artifacts"][0].update(bytes=-1)), "artifacts[0].bytes"),
    "companion as a path": (_manifest_edit(lambda m: m["artifacts"][1]["extra_files"][0].update(file="../w.bin")),
                            "artifacts[1].extra_files[0].file"),
    "one file, two hashes": (_manifest_edit(lambda m: m["artifacts"][1]["extra_files"][0].update(
        file=m["artifacts"][0]["file"])), "also listed at artifacts[0]"),
    "unknown key": (_manifest_edit(lambda m: m["artifacts"][1].update(signed=True)), "artifacts[1].signed"),
}


def _flip_at(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tamper", sorted(MANIFEST_TAMPERS))
def test_a_tampered_manifest_is_refused(templates: dict[str, Path], tmp_path: Path, tamper: str) -> None:
    bundle = _copy(templates, "openvino", tmp_path)
    damage, message = MANIFEST_TAMPERS[tamper]
    damage(bundle)
    with pytest.raises(BundleError, match="manifest.json") as raised:
        kvqe.load(bundle)
    assert message in str(raised.value)
    for command in ("info", "verify"):
        result, records = _invoke(command, str(bundle))
        assert result.exit_code == 2 and message in records[-1]["error"], (command, result.output)


def test_info_counts_every_file_of_an_artifact(templates: dict[str, Path]) -> None:
    """An OpenVINO artifact is its .xml and its .bin: ``kvqe info`` shows the two together and their sum."""
    bundle = templates["openvino"]
    xml, weights = (bundle / name for name in BUNDLES["openvino"][1])
    result = CliRunner().invoke(main, ["info", str(bundle)])
    (line,) = [line for line in result.output.splitlines() if line.startswith("artifact openvino/")]
    assert f"{xml.name} + {weights.name}  {xml.stat().st_size + weights.stat().st_size:,} bytes" in line, line


def test_an_unknown_bundle_names_where_it_looked_and_the_embedded_names(tmp_path: Path) -> None:
    result, records = _invoke("info", str(tmp_path / "nosuch"))
    assert result.exit_code == 2
    assert str(tmp_path / "nosuch") in records[-1]["error"] and "embedded name: sr, vqa" in records[-1]["error"]
    with pytest.raises(BundleError, match="embedded name: sr, vqa"):
        kvqe.load("vqa-default")
