"""Training and prediction of the per-residue (secondary structure) head: padded length buckets, early stopping."""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prottrans_jax import atomic_files
from prottrans_jax.downstream import datasets, metrics
from prottrans_jax.embedding import batching
from prottrans_jax.models.heads import SecondaryStructureCNN, sample_inputs


@dataclasses.dataclass
class TrainConfig:
    """Optimisation of a head (Adam; early stopping on the validation accuracy)."""

    learning_rate: float = 1e-3
    batch_size: int = 32  # chains
    max_epochs: int = 40
    patience: int = 5  # epochs without a better validation Q3 before stopping
    validation_fraction: float = 0.05
    seed: int = 0


class EarlyStopping:
    """Tracks the best validation score; ``update`` says whether it improved, ``stop`` whether patience ran out."""

    def __init__(self, patience: int):
        self.patience, self.best, self.bad = patience, float("-inf"), 0

    def update(self, score: float) -> bool:
        if score > self.best:
            self.best, self.bad = score, 0
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad >= self.patience


def pad_features(features: Sequence[np.ndarray], length: int) -> dict:
    """Per-residue features ``[L_i, D]`` -> ``x`` ``[batch, length, D]`` (zero-padded) and ``mask`` ``[batch, length]``."""
    x = np.zeros((len(features), length, features[0].shape[-1]), np.float32)
    mask = np.zeros((len(features), length), np.float32)
    for i, f in enumerate(features):
        x[i, :len(f)], mask[i, :len(f)] = f, 1
    return {"x": x, "mask": mask}


def pad_batch(features: Sequence[np.ndarray], records: Sequence[datasets.ResidueRecord], length: int) -> dict:
    """Stacks chains into ``[batch, length, D]`` features and ``[batch, length]`` labels and masks."""
    out = pad_features(features, length)
    for key in ("dssp3", "dssp8", "disorder", "resolved", "evaluate"):
        out[key] = np.zeros((len(records), length), np.int32)
    for i, r in enumerate(records):
        n = len(r.sequence)
        out["dssp3"][i, :n], out["dssp8"][i, :n] = r.dssp3, r.dssp8
        out["disorder"][i, :n] = r.resolved  # class 1 = resolved, 0 = disordered
        out["resolved"][i, :n], out["evaluate"][i, :n] = r.resolved, r.evaluate
    return out


def batches(features, records, batch_size: int, rng: Optional[np.random.Generator] = None):
    """Batches of ``batch_size`` chains (shuffled when ``rng`` is given), padded to length buckets."""
    order = np.arange(len(records)) if rng is None else rng.permutation(len(records))
    edges = batching.bucket_edges(max(len(r.sequence) for r in records))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        length = batching.bucket_of(max(len(records[i].sequence) for i in idx), edges)
        yield idx, pad_batch([features[i] for i in idx], [records[i] for i in idx], length)


LOSS_NAME = "loss(dssp3+dssp8+disorder)"  # how the training and validation loss (the same quantity) are printed


def loss_terms(out: dict, batch: dict) -> dict:
    """Summed cross entropies of a batch and what they are averaged over (sums add up over batches).

    Returns:
      ``structure``: DSSP3 + DSSP8 cross entropy summed over resolved residues; ``resolved``: their number;
      ``disorder``: disorder cross entropy summed over all residues; ``residues``: their number.
    """
    resolved = batch["resolved"] * batch["mask"]
    ce = optax.softmax_cross_entropy_with_integer_labels
    return {"structure": jnp.sum((ce(out["dssp3"], batch["dssp3"]) + ce(out["dssp8"], batch["dssp8"])) * resolved),
            "resolved": jnp.sum(resolved),
            "disorder": jnp.sum(ce(out["disorder"], batch["disorder"]) * batch["mask"]),
            "residues": jnp.sum(batch["mask"])}


def loss_from_terms(terms: dict):
    """The loss of the training objective and of validation: cross entropy per resolved residue of DSSP3 + DSSP8,
    plus per residue of disorder."""
    return (terms["structure"] / jnp.maximum(terms["resolved"], 1)
            + terms["disorder"] / jnp.maximum(terms["residues"], 1))


def add_terms(totals: dict, terms: dict) -> dict:
    """Running sums of :func:`loss_terms` (as Python floats) over batches."""
    return {k: totals.get(k, 0.0) + float(v) for k, v in terms.items()}


def loss_fn(params, head, batch, rng, train: bool):
    """``(loss of the batch, (outputs, loss terms))``; see :func:`loss_from_terms`."""
    out = head.apply({"params": params}, batch["x"], batch["mask"], train=train,
                     rngs={"dropout": rng} if train else {})
    terms = loss_terms(out, batch)
    return loss_from_terms(terms), (out, terms)


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_residue_head(features: Sequence[np.ndarray], records: Sequence[datasets.ResidueRecord],
                       config: TrainConfig = TrainConfig(), head: Optional[SecondaryStructureCNN] = None,
                       out_dir: Optional[str | pathlib.Path] = None, progress: bool = True):
    """Trains ``head`` on a random ``1 - validation_fraction`` of the chains; stops early on validation Q3.

    Returns:
      ``(best params, history)``: history has one dict per epoch (train loss, validation loss/Q3/Q8).
      With ``out_dir``, the best params are saved there (``head.msgpack``, ``head.json``) at each improvement.
    """
    head = head or SecondaryStructureCNN()
    train_idx, val_idx = split_validation(len(records), config.validation_fraction, config.seed)
    tr_f, tr_r = [features[i] for i in train_idx], [records[i] for i in train_idx]
    va_f, va_r = [features[i] for i in val_idx], [records[i] for i in val_idx]
    key = jax.random.key(config.seed)
    init_key, key = jax.random.split(key)
    params = jax.jit(head.init)(init_key, *sample_inputs(head, features[0].shape[-1]))["params"]  # one compile
    optimizer = optax.adam(config.learning_rate)
    opt_state = jax.jit(optimizer.init)(params)

    @jax.jit
    def step(params, opt_state, batch, rng):
        (_, (_, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, head, batch, rng, True)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, terms

    rng = np.random.default_rng(config.seed)
    history, best_params, stopper = [], params, EarlyStopping(config.patience)
    for epoch in range(1, config.max_epochs + 1):
        totals: dict = {}
        for _, batch in batches(tr_f, tr_r, config.batch_size, rng):
            key, sub = jax.random.split(key)
            params, opt_state, terms = step(params, opt_state, batch, sub)
            totals = add_terms(totals, terms)
        val = evaluate_residue_head(params, head, va_f, va_r, n_boot=0)
        history.append({"epoch": epoch, "train_loss": float(loss_from_terms(totals)), "val_loss": val["loss"],
                        "val_q3": val["dssp3"]["accuracy"], "val_q8": val["dssp8"]["accuracy"]})
        if progress:
            print(f"[epoch {epoch}] {LOSS_NAME} train={history[-1]['train_loss']:.4f} val={val['loss']:.4f} "
                  f"val_Q3={val['dssp3']['accuracy']:.4f} val_Q8={val['dssp8']['accuracy']:.4f}", flush=True)
        if stopper.update(val["dssp3"]["accuracy"]):
            best_params = params
            if out_dir is not None:
                save_head(out_dir, best_params, {"kind": "secondary_structure", "epoch": epoch, "val_q3": stopper.best,
                                                 "head": head_settings(head), "input_dim": int(features[0].shape[-1])})
        elif stopper.stop:
            break
    return best_params, history


def predict_residue_head(params, head, features: Sequence[np.ndarray], lengths: Sequence[int],
                         batch_size: int = 64) -> list[dict[str, np.ndarray]]:
    """Per chain ``{dssp3: [L, 3], dssp8: [L, 8], disorder: [L, 2]}`` probabilities."""
    apply = jax.jit(lambda p, x, m: jax.tree_util.tree_map(jax.nn.softmax, head.apply({"params": p}, x, m)))
    edges = batching.bucket_edges(max(lengths))
    out: list = [None] * len(features)
    for start in range(0, len(features), batch_size):
        idx = list(range(start, min(start + batch_size, len(features))))
        batch = pad_features([features[i] for i in idx], batching.bucket_of(max(lengths[i] for i in idx), edges))
        probs = jax.device_get(apply(params, batch["x"], batch["mask"]))
        for j, i in enumerate(idx):
            out[i] = {k: v[j, :lengths[i]] for k, v in probs.items()}
    return out


@functools.partial(jax.jit, static_argnums=1)
def _eval_step(params, head, batch):
    """``(predicted DSSP3/DSSP8 classes [batch, length], loss terms)`` without dropout."""
    _, (out, terms) = loss_fn(params, head, batch, None, False)
    return {k: jnp.argmax(out[k], -1) for k in ("dssp3", "dssp8")}, terms


def evaluate_residue_head(params, head, features, records, n_boot: int = 1000, seed: int = 0,
                          batch_size: int = 64) -> dict:
    """Q3/Q8 (with MCC, per-class figures, confusion, bootstrap SE) over the scored residues, and the loss
    (the training objective's, :func:`loss_from_terms`, over all these chains)."""
    predicted: list = [None] * len(records)
    totals: dict = {}
    for idx, batch in batches(features, records, batch_size):
        classes, terms = jax.device_get(_eval_step(params, head, batch))
        totals = add_terms(totals, terms)
        for j, i in enumerate(idx):
            predicted[i] = {k: v[j, :len(records[i].sequence)] for k, v in classes.items()}
    out = {}
    for name, labels in (("dssp3", datasets.DSSP3), ("dssp8", datasets.DSSP8)):
        chains = [(getattr(r, name), p[name], r.evaluate) for r, p in zip(records, predicted)]
        out[name] = metrics.residue_scores(chains, list(labels), n_boot=max(n_boot, 2), seed=seed)
    out["loss"] = float(loss_from_terms(totals))
    return out


def head_settings(head) -> dict:
    """The head's constructor fields (to rebuild it when loading)."""
    return {f: getattr(head, f) for f in ("hidden", "kernel_size", "dropout_rate", "depth") if hasattr(head, f)}


def save_head(out_dir, params, info: dict) -> None:
    """``head.msgpack`` (Flax serialisation) and ``head.json``, each written atomically."""
    from flax import serialization

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_files.atomic_file(out / "head.msgpack") as tmp:
        tmp.write_bytes(serialization.to_bytes(jax.device_get(params)))
    with atomic_files.atomic_file(out / "head.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=str))


def load_head(out_dir, head, input_dim: int):
    """What :func:`save_head` saved for ``head``: its params, or {params, batch_stats} for BatchNorm heads."""
    from flax import serialization

    path = pathlib.Path(out_dir) / "head.msgpack"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained head here (train one with prottrans-jax heads train)")
    template = jax.eval_shape(lambda: head.init(jax.random.key(0), *sample_inputs(head, input_dim)))  # no compiling
    if "batch_stats" not in template:
        template = template["params"]  # per-residue heads are saved as their params alone
    return serialization.from_bytes(template, path.read_bytes())
