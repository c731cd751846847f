"""TensorRT engines from ONNX (10.x/11.x Python API), recorded with what ties an engine to a machine.

TensorRT 11 builds strongly typed networks only: no implicit-INT8 calibrators and no FP16/INT8 builder
flags. The precision comes from the ONNX itself: an FP16 ONNX (:mod:`kvqe.export.fp16`) gives an FP16
engine, a QDQ ONNX (:mod:`kvqe.calibration.ort_quant`) an INT8 one. Dynamic dimensions get one
optimisation profile each (:mod:`kvqe.export.artifacts` bounds VQA batches and SR tiles).

An engine only runs on the GPU model and TensorRT version that built it: the build record beside the
engine (``<engine>.json``) holds the fingerprint :class:`kvqe.runtimes.tensorrt.TensorRTRunner` checks
before loading, and a key naming the build (:func:`engine_cache_key`: GPU, TensorRT, ONNX sha256, profiles).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvqe.errors import BadInputError, ExportValidationError
from kvqe.files import atomic_output_file, sha256_file
from kvqe.runtimes.tensorrt import device_fingerprint, dims, fingerprint_path, import_tensorrt

if TYPE_CHECKING:  # typed against tensorrt-stubs; imported for real only inside build_engine
    import tensorrt as trt

__all__ = ["build_engine", "device_fingerprint", "engine_cache_key"]

# one optimisation profile: input name -> (min shape, opt shape, max shape)
Profile = Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]


def _profiles_json(profiles: Sequence[Profile]) -> list[dict[str, list[list[int]]]]:
    return [{name: [[int(d) for d in shape] for shape in shapes] for name, shapes in sorted(profile.items())}
            for profile in profiles]


def engine_cache_key(onnx_sha256: str, profiles: Sequence[Profile], fingerprint: Mapping[str, str]) -> str:
    """A file-name-safe key naming one engine build (the build record's ``cache_key``): GPU, compute
    capability, TensorRT version, and a digest of those with the ONNX's sha256 and the profiles. Stable
    across runs and machines of the same kind."""
    payload = {"onnx_sha256": onnx_sha256, "profiles": _profiles_json(profiles),
               "gpu": fingerprint["gpu"], "compute_capability": fingerprint["compute_capability"],
               "tensorrt": fingerprint["tensorrt"]}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    gpu = re.sub(r"[^a-z0-9]+", "-", fingerprint["gpu"].lower()).strip("-") or "gpu"
    sm = fingerprint["compute_capability"].replace(".", "")
    return f"{gpu}-sm{sm}-trt{fingerprint['tensorrt']}-{digest}"


def _check_profiles(network: trt.INetworkDefinition, profiles: Sequence[Profile]) -> list[str]:
    """Every problem with ``profiles`` for the network's inputs (names, ranks, fixed and dynamic dims)."""
    inputs = {network.get_input(i).name: dims(network.get_input(i).shape) for i in range(network.num_inputs)}
    failures: list[str] = []
    dynamic = [name for name, shape in inputs.items() if any(d < 0 for d in shape)]
    if dynamic and not profiles:
        failures.append(f"inputs {dynamic} have dynamic dimensions but no optimisation profile was given")
    for index, profile in enumerate(profiles):
        for name in dynamic:
            if name not in profile:
                failures.append(f"profile {index}: no shapes for dynamic input {name!r} {inputs[name]}")
        for name, shapes in profile.items():
            if name not in inputs:
                failures.append(f"profile {index}: {name!r} is not a network input ({sorted(inputs)})")
                continue
            network_shape = inputs[name]
            low, opt, high = (tuple(int(d) for d in s) for s in shapes)
            if not len(low) == len(opt) == len(high) == len(network_shape):
                failures.append(f"profile {index}: {name!r} shapes {low}, {opt}, {high} do not have the "
                                f"input's rank {len(network_shape)}")
                continue
            for axis, fixed in enumerate(network_shape):
                if not 1 <= low[axis] <= opt[axis] <= high[axis]:
                    failures.append(f"profile {index}: {name!r} axis {axis} needs 1 <= min <= opt <= max, "
                                    f"got {low[axis]}, {opt[axis]}, {high[axis]}")
                elif fixed >= 0 and not low[axis] == opt[axis] == high[axis] == fixed:
                    failures.append(f"profile {index}: {name!r} axis {axis} is fixed at {fixed} in the network")
    return failures


def build_engine(onnx_path: Path, engine_path: Path, *, profiles: Sequence[Profile],
                 workspace_bytes: int) -> dict[str, Any]:
    """Build a strongly typed TensorRT engine from ``onnx_path`` and write it to ``engine_path``, with its
    build record (fingerprint, ONNX sha256, profiles, cache key) beside it as ``<engine>.json``.

    Raises :class:`BackendUnavailableError` without tensorrt/cuda-python/GPU, and
    :class:`ExportValidationError` listing every parser error or profile problem.
    """
    fingerprint = device_fingerprint()  # no tensorrt, cuda-python or GPU: BackendUnavailableError
    import_tensorrt()
    import tensorrt as trt

    if workspace_bytes <= 0:
        raise BadInputError(f"workspace_bytes must be positive, got {workspace_bytes}")
    onnx_sha256 = sha256_file(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or ["(no error reported)"]
        raise ExportValidationError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}:\n  - "
                                    + "\n  - ".join(errors))
    failures = _check_profiles(network, profiles)
    if failures:
        raise ExportValidationError(f"optimisation profiles do not fit {onnx_path.name}:\n  - "
                                    + "\n  - ".join(failures))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for profile_shapes in profiles:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profile_shapes.items():
            profile.set_shape(name, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportValidationError(f"TensorRT {trt.__version__} failed to build an engine from "
                                    f"{onnx_path.name} (its log above says why)")
    record = {
        "builder": "tensorrt",
        "tensorrt": str(trt.__version__),
        "fingerprint": fingerprint,
        "strongly_typed": True,
        "precision_source": "the ONNX (FP16 tensors or Q/DQ nodes); no builder precision flags",
        "onnx_sha256": onnx_sha256,
        "profiles": _profiles_json(profiles),
        "workspace_bytes": workspace_bytes,
        "cache_key": engine_cache_key(onnx_sha256, profiles, fingerprint),
        "engine_bytes": int(serialized.nbytes),
    }
    with atomic_output_file(engine_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    with atomic_output_file(fingerprint_path(engine_path)) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return record
