"""Evaluation metrics: FID, KID, precision/recall, IS and PPL (spec §11).

Entry point: :func:`metrics.metric_main.compute_metrics`, which takes a generator as a plain
callable and never imports the training code. ``python -m metrics.compare DIR_A DIR_B`` compares two
image folders with no model involved.
"""
from .metric_main import MetricOptions, MetricResult, append_results, compute_metrics, list_metrics
from .metric_utils import ImageSource

__all__ = ["ImageSource", "MetricOptions", "MetricResult", "append_results", "compute_metrics", "list_metrics"]
