"""The training loop: host-sharded data, steps, progress line, TensorBoard, evaluation, checkpoints, preemption."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np

from prottrans_jax import checkpoints, objectives, pipeline

log = logging.getLogger("prottrans_jax.train")


@dataclasses.dataclass
class LoopConfig:
    """What the loop does besides stepping (all intervals in steps; 0 turns a feature off).

    Checkpoint cadence and retention belong to the ``TrainCheckpointer`` handed to :func:`run`.
    """

    model_dir: str
    train_steps: int
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 10
    peak_flops_per_device: Optional[float] = None
    tensorboard: bool = True


def host_batches(task: str, feature_lengths, global_batch: int, split: str, seed: int, pack: bool,
                 skip_batches: int = 0, num_epochs: Optional[int] = None) -> Iterator[dict]:
    """This host's share of each global batch, as numpy, resuming after ``skip_batches`` batches.

    Each of the ``jax.process_count()`` hosts reads its own shard of the data (seqio ShardInfo).
    """
    import seqio

    hosts = jax.process_count()
    if global_batch % hosts:
        raise ValueError(f"batch size {global_batch} does not divide over {hosts} hosts")
    ds = pipeline.get_dataset(
        task, batch_size=global_batch // hosts, split=split, seed=seed, pack=pack, num_epochs=num_epochs,
        shard_info=seqio.ShardInfo(jax.process_index(), hosts) if hosts > 1 else None,
        feature_lengths=feature_lengths,
    )
    if skip_batches:
        ds = ds.skip(skip_batches)  # deterministic pipeline: the same batches, recomputed
    return pipeline.numpy_batches(ds)


def to_global(batch: Mapping[str, np.ndarray], sharding_fn: Callable[[int], Any]) -> dict:
    """Host-local numpy batch -> global jax.Arrays sharded along 'batch'."""
    return {k: jax.make_array_from_process_local_data(sharding_fn(v.ndim), v) for k, v in batch.items()}


class MetricsWriter:
    """Progress line on stdout and TensorBoard event files (process 0 only)."""

    def __init__(self, model_dir: str, enabled: bool):
        self._writer = None
        if enabled and jax.process_index() == 0:
            import tensorflow as tf

            self._tf = tf
            self._writer = tf.summary.create_file_writer(f"{model_dir}/tensorboard")

    def write(self, step: int, prefix: str, values: Mapping[str, float]):
        if jax.process_index() == 0:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
            print(f"[{prefix} step {step}] {shown}", flush=True)
        if self._writer is not None:
            with self._writer.as_default(step=step):
                for k, v in values.items():
                    self._tf.summary.scalar(f"{prefix}/{k}", v)
            self._writer.flush()


def _sum_metrics(acc: Optional[dict], new: Mapping[str, Any]) -> dict:
    new = {k: np.asarray(v, np.float64) for k, v in new.items()}
    return new if acc is None else {k: acc[k] + new[k] for k in acc}


def evaluate(trainer, state, batches: Iterator[dict], num_batches: int) -> dict[str, float]:
    """Metrics over ``num_batches`` held-out batches (fewer if the split runs out)."""
    acc = None
    for _, batch in zip(range(num_batches), batches):
        acc = _sum_metrics(acc, trainer.eval_step(state, to_global(batch, trainer.batch_sharding)))
    if acc is None:
        return {}
    acc.pop("loss", None)
    return objectives.summarize(acc)


def run(trainer, state, cfg: LoopConfig, train_batches: Iterator[dict], eval_batches_fn: Optional[Callable],
        meta: Mapping[str, Any], checkpointer: checkpoints.TrainCheckpointer):
    """Steps from ``state.step`` to ``cfg.train_steps``; returns the final state.

    Offers the checkpointer every step (it saves on its own cadence), saves at the end, and on
    SIGTERM/SIGINT (TPU preemption) saves and returns early.
    """
    writer = MetricsWriter(cfg.model_dir, cfg.tensorboard)
    if cfg.peak_flops_per_device is None:
        from prottrans_jax import device_peaks

        cfg = dataclasses.replace(cfg, peak_flops_per_device=device_peaks.peak_flops_per_device())
    preemption = checkpoints.install_preemption_handler()
    step = int(state.step)
    acc, tokens, t0, flops = None, 0, time.perf_counter(), None
    try:
        for batch in train_batches:
            if step >= cfg.train_steps:
                break
            global_batch = to_global(batch, trainer.batch_sharding)
            if flops is None and cfg.peak_flops_per_device:
                flops = trainer.step_flops(state, global_batch) or 0.0
            state, metrics = trainer.train_step(state, global_batch)
            step += 1
            # Real tokens: the targets of T5/BERT/TXL features, XLNet's whole window (its targets are 1/6 of it).
            tokens += sum(int(np.count_nonzero(v)) for k, v in batch.items()
                          if k.endswith("_target_tokens") or k == "attention_mask")
            acc = _sum_metrics(acc, metrics)
            if cfg.log_every and step % cfg.log_every == 0:
                elapsed = time.perf_counter() - t0
                values = _report(acc, cfg.log_every, tokens / elapsed, elapsed / cfg.log_every, flops, cfg)
                writer.write(step, "train", values)
                acc, tokens, t0 = None, 0, time.perf_counter()
            if cfg.eval_every and eval_batches_fn and step % cfg.eval_every == 0:
                writer.write(step, "eval", evaluate(trainer, state, eval_batches_fn(), cfg.eval_batches))
            checkpointer.save(step, state, dict(meta, data_position=step))
            if checkpoints.reached_preemption_sync_point(preemption, step):
                log.warning("preemption signal: saving step %d and stopping", step)
                break
        checkpointer.save(step, state, dict(meta, data_position=step), force=True)
        checkpointer.wait()
    finally:
        preemption.uninstall()
    return state


def _report(acc: dict, steps: int, tokens_per_s: float, step_time: float, flops: Optional[float], cfg: LoopConfig):
    """Averaged step metrics + throughput (+ MFU against the configured peak)."""
    loss = acc.pop("loss") / steps
    lr = acc.pop("learning_rate", None)
    grad_norm = acc.pop("grad_norm") / steps
    values = objectives.summarize(acc)
    values.update(loss=float(loss), grad_norm=float(grad_norm), tokens_per_s=tokens_per_s, step_time_s=step_time)
    if lr is not None:
        values["learning_rate"] = float(lr) / steps
    if flops and cfg.peak_flops_per_device:
        # XLA's cost analysis of the partitioned step counts one device's share of the work.
        values["mfu"] = flops / step_time / cfg.peak_flops_per_device
    return values
