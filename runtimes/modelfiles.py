"""A runner's model as bytes (:class:`kvqe.files.ModelFiles`): read from a path, and ONNX external data
filled in from the verified companions only.

Runners parse the bytes a bundle verified (:meth:`kvqe.bundle.Bundle.read_verified`), never a file path,
so nothing can change between the hash check and the parse, and a model cannot pull in a file the
manifest does not list. Export-time code and tests still hand runners paths: those are read as they are.
"""
from __future__ import annotations

from pathlib import Path

import onnx

from kvqe.errors import BundleError
from kvqe.files import ModelFiles
from kvqe.onnx_data import external_info, external_tensors, parse_model


def read_onnx(path: Path) -> ModelFiles:
    """An ONNX file and the external data files it names (export-time use: nothing to verify against)."""
    main = ModelFiles.read(path)
    model = parse_model(main.main, path, advice=None)
    locations = tuple(dict.fromkeys(external_info(t, main.name).location for t in external_tensors(model)))
    return ModelFiles.read(path, locations) if locations else main


def onnx_bytes(files: ModelFiles) -> bytes:
    """The ONNX model as one self-contained serialization: tensors kept as external data are filled in from
    ``files.companions`` (offset and length as recorded), so a runtime reads nothing from disk.

    A location that is not a plain file name, is not among the companions, or lies outside its companion
    is a :class:`BundleError` naming it. A model without external data is returned as it is.
    """
    model = parse_model(files.main, files.name)
    tensors = external_tensors(model)
    if not tensors:
        return files.main
    for tensor in tensors:
        info = external_info(tensor, files.name)
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
