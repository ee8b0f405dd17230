"""Flax Linen networks of the ProtTrans families, their shared layers and named configs."""
