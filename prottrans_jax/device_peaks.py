"""Peak matmul FLOP/s per device, for the trainer's MFU estimate: vendor figures, or measured on CPU."""

from __future__ import annotations

import time

# Dense bf16 peaks (FLOP/s per chip or GPU) from the vendors' specifications.
KNOWN_PEAKS = {
    "TPU v3": 123e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def measured_matmul_peak(n: int = 1024, reps: int = 5, dtype: str = "float32") -> float:
    """Best ``jnp.dot`` rate of device 0 in ``dtype`` (FLOP/s); a second or so on a CPU at the defaults."""
    import jax
    import jax.numpy as jnp

    x = jax.device_put(jnp.ones((n, n), dtype), jax.devices()[0])
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    best = 0.0
    for _ in range(reps):
        start = time.perf_counter()
        f(x).block_until_ready()
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def peak_flops_per_device() -> float:
    """The vendor peak of this accelerator, or a measured matmul peak on CPU and unknown devices."""
    import jax

    kind = jax.devices()[0].device_kind
    for name, peak in KNOWN_PEAKS.items():
        if kind.lower().startswith(name.lower()):
            return peak
    return measured_matmul_peak()
