"""The calibration pass: per-input-feature activation norms ||X_j||_2, within a memory budget."""

from edged.calibrate.budgeted import CalibrationResult, calibrate
from edged.calibrate.feature_norms import FeatureNormCollector, norm_like_weight

__all__ = ["CalibrationResult", "calibrate", "FeatureNormCollector", "norm_like_weight"]
