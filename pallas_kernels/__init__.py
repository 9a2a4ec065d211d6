"""Kernels behind `aira_jax.ops`, one folder per op.

Each folder holds `reference.py` (a float32 naive recurrent oracle, the ground truth for tests) and `xla.py`
(the chunked pure-JAX implementation that runs everywhere). Backend kernels (`gpu.py` for Mosaic GPU,
`tpu.py` for Mosaic TPU) register themselves with `aira_jax.ops.dispatch` when present.
"""
