"""Weight importers: PyTorch checkpoints and ncnn models."""
