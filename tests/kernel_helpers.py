"""Shared by the kernel tests: what a lowered Mosaic TPU custom call tells XLA about its cost."""
import json
import re

# The backend config is JSON inside an MLIR string attribute, with quotes and newlines escaped as \22 and \0A.
_COST = re.compile(r'cost_estimate\\22: (\{[^}]*\})')


def tpu_cost_estimates(lowered_text: str) -> list[dict]:
    """The pl.CostEstimate of every Mosaic TPU kernel in a lowered module's text, in program order."""
    return [json.loads(m.replace('\\22', '"').replace('\\0A', '')) for m in _COST.findall(lowered_text)]
