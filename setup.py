"""AIRA-JAX: LLM agents that discover language-model architectures, in JAX."""
from setuptools import find_packages, setup

setup(
    name="aira-jax",
    version="0.1.0",
    description="JAX-native autonomous discovery of language-model architectures",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["aira_jax", "aira_jax.*", "pallas_kernels", "pallas_kernels.*"]),
    package_data={"aira_jax": ["models/baselines/*.py", "data/*.txt"]},
    install_requires=[
        "jax>=0.11,<0.12",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "grain>=0.2.12",
        "sentencepiece>=0.2",
        "absl-py>=2.1",
        "ml-collections>=1.0",
        "scikit-learn>=1.5",
        "google-genai>=1.0",
        "einops>=0.8",
        "numpy>=2.0",
        "tensorboardX>=2.6",
        "sqlalchemy>=2.0",
        "tqdm>=4.66",
    ],
    extras_require={
        "cuda": ["jax[cuda13]>=0.11,<0.12"],
        "tpu": ["jax[tpu]>=0.11,<0.12"],
        "hf": ["datasets>=3.0"],
        "postgres": ["psycopg[binary]>=3.2"],
        "test": ["pytest>=8", "pytest-timeout>=2.3"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["aira-train=aira_jax.train.__main__:run"]},
)
