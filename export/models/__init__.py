"""Architectures; importing this package registers every model."""
from kvqe.export.models import realesrgan, sharpmind, sinsr, student  # noqa: F401
