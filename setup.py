"""prottrans-jax: JAX/TPU protein language models in the ProtTrans line."""

from setuptools import find_packages, setup

setup(
    name="prottrans-jax",
    version="0.1.0",
    description="Pretrain, fine-tune, export and use ProtT5/ProtBert-style protein language models in JAX.",
    python_requires=">=3.11",
    packages=find_packages(include=["prottrans_jax", "prottrans_jax.*"]) + ["prottrans_jax_tasks"],
    # The SeqIO task registrations live in tasks/ and import as `prottrans_jax_tasks`,
    # a name that cannot collide with other packages' `tasks` modules.
    package_dir={"prottrans_jax_tasks": "tasks"},
    package_data={"prottrans_jax": ["data/*.fasta.gz", "data/heads/*/*"], "": ["*.gin"]},
    include_package_data=True,
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "seqio>=0.0.20",
        "gin-config>=0.5",
        "numpy>=2.0",
        "h5py>=3.10",
        "sentencepiece>=0.2",
        "tqdm>=4.66",
        "tensorboard>=2.16",  # TensorBoard event files from the trainer (tf.summary)
        "biopython>=1.80",  # BLOSUM62 (the downstream baseline encoding)
        "scikit-learn>=1.4",  # downstream metrics (MCC, confusion matrices, per-class precision/recall)
        "matplotlib>=3.8",  # downstream report plots (PNG)
    ],
    extras_require={
        # HuggingFace interchange and parity tests. torch is pinned to the CPU build on local disk.
        "torch": ["torch==2.13.0", "transformers>=5.0", "safetensors>=0.4"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0", "transformers>=5.0", "safetensors>=0.4",
                 "nbformat>=5.9", "nbclient>=0.10", "ipykernel>=6.29"],  # the notebooks run in the suite
        "notebooks": ["nbformat>=5.9", "nbclient>=0.10", "ipykernel>=6.29"],
    },
    entry_points={"console_scripts": ["prottrans-jax=prottrans_jax.cli:main"]},
)
