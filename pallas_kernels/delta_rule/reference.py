"""Float32 naive recurrent oracle for the delta rule: the gated oracle with no decay."""
from pallas_kernels.gated_delta_rule.reference import recurrent_gated_delta_rule


def recurrent_delta_rule(q, k, v, beta, *, scale=None, initial_state=None, output_final_state=False):
    """S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T ; o_t = scale q_t^T S_t."""
    return recurrent_gated_delta_rule(q, k, v, None, beta, scale=scale, initial_state=initial_state,
                                      output_final_state=output_final_state)
