"""FP32 ONNX -> FP16 ONNX with float32 inputs and outputs (what TensorRT's strongly typed networks and
OpenVINO's GPU plugin take as "FP16"; it also runs on ONNX Runtime CPU).

The converter is ONNX Runtime's own (``onnxruntime.transformers.float16``), so no extra dependency.
Ops on its default block list (and any in ``op_block_list``) stay float32 behind Cast nodes. Measured
on the registered models, nothing more needs to stay float32: realesr-animevideov3 keeps ~70 dB PSNR
against FP32 on photo crops, and the Swin-T student's scores move by ~1e-4, LayerNorm and Softmax
included.
"""
from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from kvqe.errors import BackendUnavailableError
from kvqe.files import atomic_output_file

CONVERTER = "onnxruntime.transformers.float16.convert_float_to_float16 (keep_io_types=True)"


def convert_fp16(fp32_onnx: Path, out_onnx: Path, *, op_block_list: Sequence[str] = ()) -> dict[str, Any]:
    """Write the FP16 version of ``fp32_onnx`` to ``out_onnx`` (float32 I/O kept) and return its record.

    ``op_block_list``: op types to keep in float32 on top of the converter's defaults.
    """
    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError as exc:  # e.g. its ``packaging`` import
        raise BackendUnavailableError(f"ONNX Runtime's float16 converter does not import here: {exc}") from None
    blocked = sorted({*DEFAULT_OP_BLOCK_LIST, *op_block_list})
    model = onnx.load(str(fp32_onnx))
    fp32_ops = {node.op_type for node in model.graph.node}
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    _drop_duplicate_casts(converted.graph)
    with atomic_output_file(out_onnx) as partial:
        onnx.save(converted, str(partial))
    initializers = collections.Counter(
        onnx.TensorProto.DataType.Name(tensor.data_type).lower() for tensor in converted.graph.initializer)
    return {
        "converter": CONVERTER,
        "onnxruntime": ort.__version__,
        "io_types": "float32",
        "float32_ops": sorted(fp32_ops.intersection(blocked)),
        "op_block_list_extra": sorted(op_block_list),
        "initializers": dict(sorted(initializers.items())),
    }


def _drop_duplicate_casts(graph: onnx.GraphProto) -> None:
    """Remove the repeated Cast nodes the converter inserts when one tensor feeds an always-float input of
    several nodes (e.g. the ``scales`` of three Resize nodes sharing one constant): each copy has the same
    name, input and output, which ONNX Runtime refuses ("two nodes with same node name"). The first copy
    precedes every consumer, so the others can go."""
    seen: set[bytes] = set()
    kept = []
    for node in graph.node:
        key = node.SerializeToString()
        if node.op_type == "Cast" and key in seen:
            continue
        seen.add(key)
        kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)
