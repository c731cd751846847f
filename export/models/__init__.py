"""Architectures; importing this package registers every model."""
from kvqe.export.models import realesrgan, sharpmind  # noqa: F401
