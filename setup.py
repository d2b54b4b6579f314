"""tokenlearner_jax: TokenLearner and token-efficient vision backbones in JAX/Flax."""

import setuptools

setuptools.setup(
    name="tokenlearner_jax",
    version="0.1.0",
    description="TokenLearner, TokenFuser and token-efficient vision backbones in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["tokenlearner_jax", "tokenlearner_jax.*"]),
    package_data={"tokenlearner_jax.train": ["block_cache.c"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7,<0.11",
        "flax>=0.11,<0.13",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "ml_collections>=1.0,<2",
        "clu>=0.0.12,<0.1",
        "tensorflow-datasets>=4.9.8,<5",
        "grain>=0.2.12,<0.3",
        "scikit-learn>=1.4,<2",
        "numpy>=1.26,<3",
        "pillow>=10",
        "tensorflow-cpu>=2.18,<3",
        "tensorboard>=2.18,<3",
        "matplotlib>=3.8,<4",
        "safetensors>=0.4,<1",
        "av>=12",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5"],
        # An accelerator's JAX on top of the CPU install: `pip install -e ".[cuda]"` (NVIDIA GPU, CUDA 12
        # wheels), ".[cuda13]" (CUDA 13), or ".[tpu]" (Cloud TPU VMs). JAX checks versions at import.
        "cuda": ["jax[cuda12]>=0.7,<0.11"],
        "cuda13": ["jax[cuda13]>=0.7,<0.11"],
        "tpu": ["jax[tpu]>=0.7,<0.11"],
    },
    entry_points={"console_scripts": [
        "tokenlearner-train = tokenlearner_jax.main:run",
        "tokenlearner-convert = tokenlearner_jax.convert:run",
        "tokenlearner-visualize = tokenlearner_jax.visualize:run",
        "tokenlearner-predict = tokenlearner_jax.predict:run_command",
        "tokenlearner-export = tokenlearner_jax.export:run_command",
        "tokenlearner-sweep = tokenlearner_jax.sweep:main",
        "tokenlearner-launch = tokenlearner_jax.launch:main",
    ]},
)
