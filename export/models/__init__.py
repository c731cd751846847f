"""Architectures; importing this package registers every model."""
from kvqe.export.models import realesrgan, sharpmind, student  # noqa: F401
