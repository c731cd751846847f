"""kvqe.export: PyTorch models, weight importers, ONNX export and validation, bundle building.

Needs the ``export`` extra (torch). Nothing here is imported by the runtime.
"""
