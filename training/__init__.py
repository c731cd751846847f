"""kvqe.training: distillation data (content, processing ladder, teacher), student training, baselines."""
