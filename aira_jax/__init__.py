"""AIRA-JAX: LLM agents that discover language-model architectures, in JAX."""
__version__ = "0.1.0"
