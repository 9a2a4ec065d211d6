"""Short causal depthwise convolution (the size-4 conv of DeltaNet and Mamba)."""
from pallas_kernels.short_conv.reference import naive_short_conv
from pallas_kernels.short_conv.xla import short_conv

__all__ = ["naive_short_conv", "short_conv"]
