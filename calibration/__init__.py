"""kvqe.calibration: comparators and accuracy gates (calibration sets and quantisation build on these)."""
