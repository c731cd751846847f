"""A runner's model as bytes (:class:`kvqe.files.ModelFiles`): read from a path, and ONNX external data
filled in from the verified companions only.

Runners parse the bytes a bundle verified (:meth:`kvqe.bundle.Bundle.read_verified`), never a file path,
so nothing can change between the hash check and the parse, and a model cannot pull in a file the
manifest does not list. Export-time code and tests still hand runners paths: those are read as they are.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from kvqe.errors import BundleError
from kvqe.files import ModelFiles


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph stores: initializers, sparse initializers, node attributes, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
        for sparse in attribute.sparse_tensors:
            yield from (sparse.values, sparse.indices)
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    tensors = list(_graph_tensors(model.graph))
    tensors += [t for function in model.functions for node in function.node for t in _node_tensors(node)]
    return [tensor for tensor in tensors if uses_external_data(tensor)]


def _external_info(tensor: onnx.TensorProto, model_name: str) -> ExternalDataInfo:
    """Where ``tensor``'s data lives; its location must be a plain file name beside the model."""
    try:
        info = ExternalDataInfo(tensor)
    except ValueError as exc:
        raise BundleError(f"{model_name}: tensor {tensor.name!r} has a malformed external data entry ({exc}); "
                          "re-export the model") from None
    location = info.location
    if not location or location in (".", "..") or Path(location).name != location or "\\" in location:
        raise BundleError(f"{model_name}: tensor {tensor.name!r} keeps its data in {location!r}, which is not a "
                          "plain file name beside the model; re-export it with the data inside or beside it")
    return info


def read_onnx(path: Path) -> ModelFiles:
    """An ONNX file and the external data files it names (export-time use: nothing to verify against)."""
    main = ModelFiles.read(path)
    try:
        model = onnx.load_model_from_string(main.main)
    except Exception as exc:  # noqa: BLE001 (protobuf raises its own DecodeError; the runtime will say more)
        raise BundleError(f"{path}: not an ONNX model ({exc})") from None
    locations = tuple(dict.fromkeys(_external_info(t, main.name).location for t in _external_tensors(model)))
    return ModelFiles.read(path, locations) if locations else main


def onnx_bytes(files: ModelFiles) -> bytes:
    """The ONNX model as one self-contained serialization: tensors kept as external data are filled in from
    ``files.companions`` (offset and length as recorded), so a runtime reads nothing from disk.

    A location that is not a plain file name, is not among the companions, or lies outside its companion
    is a :class:`BundleError` naming it. A model without external data is returned as it is.
    """
    try:
        model = onnx.load_model_from_string(files.main)
    except Exception as exc:  # noqa: BLE001 (protobuf raises its own DecodeError)
        raise BundleError(f"{files.name}: not an ONNX model ({exc}); re-export the bundle") from None
    tensors = _external_tensors(model)
    if not tensors:
        return files.main
    for tensor in tensors:
        info = _external_info(tensor, files.name)
        location = info.location
        data = files.companions.get(location)
        if data is None:
            listed = ", ".join(files.companions) or "none"
            raise BundleError(f"{files.name}: tensor {tensor.name!r} keeps its data in {location!r}, which is not "
                              f"among the model's verified files ({listed}); list it in the artifact's extra_files")
        offset = int(info.offset or 0)
        length = len(data) - offset if info.length is None else int(info.length)
        if offset + length > len(data) or length < 0:
            raise BundleError(f"{files.name}: tensor {tensor.name!r} reads bytes {offset}..{offset + length} of "
                              f"{location!r}, which has {len(data)}; the model and its data do not belong together")
        tensor.raw_data = data[offset:offset + length]
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
    return model.SerializeToString()
