"""Simple GLA / SSD: the scalar-decay linear recurrence behind Mamba2."""
from pallas_kernels.simple_gla.reference import recurrent_simple_gla
from pallas_kernels.simple_gla.xla import chunk_simple_gla

__all__ = ["chunk_simple_gla", "recurrent_simple_gla"]
