"""Normalisations and rotary embedding."""
from pallas_kernels.norms.xla import gated_rms_norm, l2norm, rms_norm, rotary

__all__ = ["gated_rms_norm", "l2norm", "rms_norm", "rotary"]
