"""Sample media shipped with kvqe (the README's main job and export validation use them).

``astronaut.png``: scikit-image's ``astronaut`` photo (NASA, public domain), resized to 192x192.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_image_path() -> Path:
    """Path of the shipped sample photo (BGR PNG, 192x192)."""
    return Path(str(resources.files("kvqe.samples") / "astronaut.png"))
