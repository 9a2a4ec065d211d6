"""Delta rule (DeltaNet): S_t = (I - beta k k^T) S_{t-1} + beta k v^T."""
from pallas_kernels.delta_rule.reference import recurrent_delta_rule
from pallas_kernels.delta_rule.xla import chunk_delta_rule

__all__ = ["chunk_delta_rule", "recurrent_delta_rule"]
