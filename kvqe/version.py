"""The package version, written once: pyproject.toml reads it (dynamic version), ``kvqe.__version__`` and
the manifests an export writes (``kvqe_version``) import it from here, below every layer that needs it."""
__version__ = "0.1.0"
