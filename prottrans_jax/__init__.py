"""prottrans-jax: protein language models of the ProtTrans line in JAX/Flax."""

__version__ = "0.1.0"
