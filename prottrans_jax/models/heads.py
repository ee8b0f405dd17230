"""Downstream heads on per-residue features (ProtTrans' secondary-structure CNN, light attention) or pooled ones (FNN)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

Array = jnp.ndarray
SS_OUTPUTS = {"dssp3": 3, "dssp8": 8, "disorder": 2}
LOCATION_OUTPUTS = {"location": 10, "membrane": 2}


class SecondaryStructureCNN(nn.Module):
    """Conv(D->32, k7, same) -> ReLU -> dropout 0.25 -> one Conv(32->n, k7) per output (DSSP3, DSSP8, disorder).

    Attributes:
      hidden: channels of the shared convolution (32 in ProtTrans).
      kernel_size: convolution width (7).
      dropout_rate: after the shared convolution (0.25).
      depth: extra Conv(hidden->hidden) + ReLU layers before the outputs (0 = the paper's network).
    """

    hidden: int = 32
    kernel_size: int = 7
    dropout_rate: float = 0.25
    depth: int = 0

    @nn.compact
    def __call__(self, features: Array, mask: Array, *, train: bool = False) -> dict[str, Array]:
        """``[batch, length, D]`` features, ``[batch, length]`` 1/0 mask -> ``{name: [batch, length, n]}`` logits."""
        keep = mask[..., None].astype(features.dtype)
        # Zeroed padding makes SAME padding on the batch equal to zero padding of each chain.
        x = nn.Conv(self.hidden, (self.kernel_size,), padding="SAME", name="conv")(features * keep)
        x = nn.relu(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x) * keep
        for i in range(self.depth):
            x = nn.relu(nn.Conv(self.hidden, (self.kernel_size,), padding="SAME", name=f"conv_{i + 1}")(x)) * keep
        # [batch, length, hidden] -> [batch, length, n] per output
        return {name: nn.Conv(n, (self.kernel_size,), padding="SAME", name=name)(x)
                for name, n in SS_OUTPUTS.items()}


class _ProteinClassifier(nn.Module):
    """Dense(32) -> dropout -> ReLU -> BatchNorm -> Dense(10 locations) and Dense(2 membrane)."""

    hidden: int = 32
    dropout_rate: float = 0.25

    @nn.compact
    def __call__(self, x: Array, train: bool) -> dict[str, Array]:
        x = nn.Dense(self.hidden, name="dense")(x)  # [batch, D] -> [batch, hidden]
        x = nn.relu(nn.Dropout(self.dropout_rate, deterministic=not train)(x))
        x = nn.BatchNorm(use_running_average=not train, name="batch_norm")(x)
        return {name: nn.Dense(n, name=name)(x) for name, n in LOCATION_OUTPUTS.items()}


class LocalizationFNN(nn.Module):
    """ProtTrans' per-protein network on mean-pooled embeddings: ``[batch, D]`` -> location and membrane logits."""

    hidden: int = 32
    dropout_rate: float = 0.25

    @nn.compact
    def __call__(self, pooled: Array, *, train: bool = False) -> dict[str, Array]:
        return _ProteinClassifier(self.hidden, self.dropout_rate, name="classifier")(pooled, train)


class LightAttention(nn.Module):
    """Light attention (Staerk et al. 2021) on per-residue features.

    Two Conv1d(D->D, k9): values and attention logits; softmax over the residues (padding masked);
    the attention-weighted sum of values concatenated with their max over residues -> the classifier.

    Attributes:
      kernel_size: 9.
      conv_dropout: dropout on the values (0.25).
      hidden, dropout_rate: the classifier's.
    """

    kernel_size: int = 9
    conv_dropout: float = 0.25
    hidden: int = 32
    dropout_rate: float = 0.25

    @nn.compact
    def __call__(self, features: Array, mask: Array, *, train: bool = False) -> dict[str, Array]:
        """``[batch, length, D]``, ``[batch, length]`` -> ``{location: [batch, 10], membrane: [batch, 2]}``."""
        d = features.shape[-1]
        valid = mask[..., None] > 0  # [batch, length, 1]
        features = jnp.where(valid, features, 0.0)
        values = nn.Conv(d, (self.kernel_size,), padding="SAME", name="values")(features)  # [batch, length, D]
        values = nn.Dropout(self.conv_dropout, deterministic=not train)(values)
        logits = nn.Conv(d, (self.kernel_size,), padding="SAME", name="attention")(features)  # [batch, length, D]
        logits = jnp.where(valid, logits, -1e9)
        weights = nn.softmax(logits, axis=1)  # over length, per channel
        attended = jnp.sum(weights * values, axis=1)  # [batch, D]
        maxed = jnp.max(jnp.where(valid, values, -1e9), axis=1)  # [batch, D]
        return _ProteinClassifier(self.hidden, self.dropout_rate, name="classifier")(
            jnp.concatenate([attended, maxed], axis=-1), train)


def takes_residues(head: nn.Module) -> bool:
    """Whether ``head`` reads per-residue features with a mask (CNN, light attention) or one vector a protein (FNN)."""
    return not isinstance(head, LocalizationFNN)


def sample_inputs(head: nn.Module, width: int, batch: int = 2) -> tuple[Array, ...]:
    """Zero inputs of the right shapes for ``head.init`` (``[batch, 8, width]`` + mask, or ``[batch, width]``)."""
    if takes_residues(head):
        return jnp.zeros((batch, 8, width)), jnp.ones((batch, 8))
    return (jnp.zeros((batch, width)),)
