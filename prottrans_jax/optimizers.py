"""Optimisers and learning-rate schedules from optax, configured by name (gin binds these functions)."""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "rsqrt", "linear", "cosine")
OPTIMIZERS = ("adafactor", "adamw", "lamb")


def make_schedule(
    kind: str = "rsqrt",
    learning_rate: float = 1e-2,
    warmup_steps: int = 10_000,
    total_steps: Optional[int] = None,
    end_value: float = 0.0,
) -> optax.Schedule:
    """Learning-rate schedule.

    Args:
      kind: ``rsqrt``: T5's inverse square root, ``learning_rate * sqrt(warmup / max(step, warmup))``
        (flat at ``learning_rate`` during warmup, as T5 and ProtT5 used it); ``linear`` or
        ``cosine``: linear warmup from 0 to ``learning_rate``, then decay to ``end_value`` at
        ``total_steps``; ``constant``.
      learning_rate: peak (or plateau) value.
      warmup_steps: warmup length.
      total_steps: needed by ``linear`` and ``cosine``.
      end_value: final value of the decaying schedules.
    """
    warmup = max(int(warmup_steps), 1)
    if kind == "constant":
        return optax.constant_schedule(learning_rate)
    if kind == "rsqrt":
        return lambda step: learning_rate * jnp.sqrt(warmup / jnp.maximum(jnp.asarray(step, jnp.float32), warmup))
    if kind in ("linear", "cosine"):
        if not total_steps or total_steps <= warmup_steps:
            raise ValueError(f"the {kind} schedule needs total_steps greater than warmup_steps ({warmup_steps})")
        if kind == "cosine":
            return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, total_steps, end_value)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, learning_rate, warmup),
             optax.linear_schedule(learning_rate, end_value, total_steps - warmup)],
            [warmup],
        )
    raise ValueError(f"unknown schedule {kind!r}; expected one of {SCHEDULES}")


def make_optimizer(
    name: str = "adafactor",
    schedule: Optional[optax.Schedule] = None,
    weight_decay: float = 0.0,
    clip_norm: Optional[float] = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    multiply_by_parameter_scale: bool = True,
) -> optax.GradientTransformation:
    """Optimiser by name, with global-norm gradient clipping in front.

    Args:
      name: ``adafactor`` (T5/ProtT5: factored second moments, no first moment, update clipping
        1.0, relative step off, the schedule gives the step size), ``adamw`` or ``lamb`` (ProtBert).
      schedule: learning-rate schedule (default: :func:`make_schedule` with its defaults).
      weight_decay: decoupled weight decay (adamw, lamb; adafactor's is multiplied by the lr).
      clip_norm: clip gradients to this global norm first (None: no clipping).
      b1, b2, eps: moment and epsilon parameters of adamw/lamb.
      multiply_by_parameter_scale: Adafactor's relative updates (scaled by each parameter's RMS), the
        T5/t5x default.
    """
    schedule = schedule if schedule is not None else make_schedule()
    if name == "adafactor":
        opt = optax.adafactor(
            learning_rate=schedule, multiply_by_parameter_scale=multiply_by_parameter_scale, clipping_threshold=1.0,
            decay_rate=0.8, min_dim_size_to_factor=128, weight_decay_rate=weight_decay or None,
        )
    elif name == "adamw":
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    elif name == "lamb":
        opt = optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm else opt
