"""Every experiment config loads, validates, and builds (abstractly) the model it describes."""
import importlib.util
import pathlib

import pytest
from flax import nnx

from aira_jax.models import build_model
from aira_jax.train.validate import validate_config

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
CASES = [("tiny", v) for v in ("deltanet", "gated_deltanet", "mamba2", "attention")] + [
    ("explore", "deltanet"), ("verify", "attention"), ("hybrid", "jamba"), ("hybrid", "nemotron_h"),
    ("hybrid", "gdn_swa")]


def load(name):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name,variant", CASES)
def test_config_validates_and_builds(name, variant):
  c = load(name).get_config(variant)
  validate_config(c)
  model_cfg = c.model.to_dict()
  model_cfg["vocab_size"] = model_cfg["vocab_size"] or 512
  model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))  # shapes only: no memory, no FLOPs
  assert model is not None


@pytest.mark.parametrize("name", ["tiny", "explore", "verify", "hybrid"])
def test_unknown_variant_is_a_clear_error(name):
  with pytest.raises(ValueError, match="variant must be one of"):
    load(name).get_config("no_such_design")
