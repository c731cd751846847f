"""ONNX external data: the one walk over every tensor a model stores, and where their data lives.

Used by the bundle (which external data files a verified ONNX main file names, so an unlisted one is
refused) and by the runners (:mod:`kvqe.runtimes.modelfiles`, which fill external data in from verified
companions). ``onnx`` is imported when a function needs it, so importing this module stays light.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from kvqe.errors import BundleError

if TYPE_CHECKING:
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

REEXPORT = "re-export the bundle"


def parse_model(data: bytes, where: Path | str, advice: str | None = REEXPORT) -> onnx.ModelProto:
    """The ONNX model in ``data``; a BundleError naming ``where`` (and ``advice``) if it is not one."""
    import onnx

    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 (protobuf raises its own DecodeError; the runtime will say more)
        raise BundleError(f"{where}: not an ONNX model ({exc})" + (f"; {advice}" if advice else "")) from None


def model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a model stores: initializers, sparse initializers, node attributes, subgraphs, functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
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
        sparse_tensors = [*([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []),
                          *attribute.sparse_tensors]
        for sparse in sparse_tensors:
            yield from (sparse.values, sparse.indices)
        for graph in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]:
            yield from _graph_tensors(graph)


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The tensors whose data the model keeps outside itself, in graph order."""
    import onnx

    return [tensor for tensor in model_tensors(model) if tensor.data_location == onnx.TensorProto.EXTERNAL]


def external_locations(model: onnx.ModelProto) -> tuple[str, ...]:
    """The external data locations a model names, as written (``""`` for none), in graph order, once each."""
    locations = [next((e.value for e in tensor.external_data if e.key == "location"), "")
                 for tensor in external_tensors(model)]
    return tuple(dict.fromkeys(locations))


def onnx_external_data(data: bytes, where: Path | str) -> tuple[str, ...]:
    """The external data locations an ONNX model names (in graph order), read from its bytes without
    opening any of them; BundleError if the bytes are not an ONNX model."""
    if b"location" not in data:  # the key every external data entry carries: no entry can be present
        return ()
    return external_locations(parse_model(data, where))


def is_plain_file_name(location: str) -> bool:
    """True if ``location`` names a file beside the model: no directory part, not ``.`` or ``..``."""
    return (bool(location) and location not in (".", "..") and Path(location).name == location
            and "\\" not in location)


def external_info(tensor: onnx.TensorProto, model_name: str) -> ExternalDataInfo:
    """Where ``tensor``'s data lives; its location must be a plain file name beside the model."""
    from onnx.external_data_helper import ExternalDataInfo

    try:
        info = ExternalDataInfo(tensor)
    except ValueError as exc:
        raise BundleError(f"{model_name}: tensor {tensor.name!r} has a malformed external data entry ({exc}); "
                          "re-export the model") from None
    if not is_plain_file_name(info.location):
        raise BundleError(f"{model_name}: tensor {tensor.name!r} keeps its data in {info.location!r}, which is "
                          "not a plain file name beside the model; re-export it with the data inside or beside it")
    return info
