"""Gated delta rule (Gated DeltaNet): per-head scalar decay on top of the delta rule."""
from pallas_kernels.gated_delta_rule.reference import recurrent_gated_delta_rule
from pallas_kernels.gated_delta_rule.xla import chunk_gated_delta_rule

__all__ = ["chunk_gated_delta_rule", "recurrent_gated_delta_rule"]
