"""Chunked delta rule in pure JAX: the WY-form chunked gated delta rule with the decay switched off."""
from pallas_kernels.gated_delta_rule.xla import chunk_gated_delta_rule


def chunk_delta_rule(q, k, v, beta, *, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    return chunk_gated_delta_rule(q, k, v, None, beta, scale=scale, initial_state=initial_state,
                                  output_final_state=output_final_state, chunk_size=chunk_size)
