"""Causal softmax attention with GQA, sliding windows and a KV prefix."""
from pallas_kernels.attention.reference import naive_attention
from pallas_kernels.attention.xla import attention, cudnn_applies

__all__ = ["attention", "cudnn_applies", "naive_attention"]
