"""Training and prediction of the per-protein heads (location + membrane): FNN on pooled, light attention on per-residue."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prottrans_jax.downstream import datasets, metrics
from prottrans_jax.downstream.residue_training import (EarlyStopping, TrainConfig, add_terms, head_settings,
                                                        pad_features, save_head, split_validation)
from prottrans_jax.embedding import batching
from prottrans_jax.models.heads import LocalizationFNN, sample_inputs, takes_residues


def _pack(features: Sequence[np.ndarray], head) -> dict:
    """``x`` [batch, D] for the FNN; ``x`` [batch, length bucket, D] and ``mask`` for light attention."""
    if not takes_residues(head):
        return {"x": np.stack(features).astype(np.float32)}
    longest = max(len(f) for f in features)
    return pad_features(features, batching.bucket_of(longest, batching.bucket_edges(longest)))


def _apply(head, variables, batch, train: bool, rng=None):
    args = (batch["x"], batch["mask"]) if takes_residues(head) else (batch["x"],)
    if train:
        return head.apply(variables, *args, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    return head.apply(variables, *args, train=False), None


LOSS_NAME = "loss(location+membrane)"  # how the training and validation loss (the same quantity) are printed


def loss_terms(out: dict, labels: dict) -> dict:
    """Summed cross entropies and what they are averaged over (sums add up over batches).

    Returns:
      ``location``: location cross entropy summed over proteins; ``proteins``: their number;
      ``membrane``: membrane cross entropy summed over proteins with a known M/S label; ``known``: their number.
    """
    ce = optax.softmax_cross_entropy_with_integer_labels
    known = (labels["membrane"] >= 0).astype(jnp.float32)
    return {"location": jnp.sum(ce(out["location"], labels["location"])),
            "proteins": jnp.asarray(labels["location"].shape[0], jnp.float32),
            "membrane": jnp.sum(ce(out["membrane"], jnp.maximum(labels["membrane"], 0)) * known),
            "known": jnp.sum(known)}


def loss_from_terms(terms: dict):
    """The loss of the training objective and of validation: location cross entropy per protein, plus membrane
    cross entropy per protein with a known label."""
    return terms["location"] / jnp.maximum(terms["proteins"], 1) + terms["membrane"] / jnp.maximum(terms["known"], 1)


def loss_fn(params, batch_stats, head, batch, rng):
    """``(loss of the batch, (updated batch_stats, loss terms))``; see :func:`loss_from_terms`."""
    out, updates = _apply(head, {"params": params, "batch_stats": batch_stats}, batch, True, rng)
    terms = loss_terms(out, batch)
    return loss_from_terms(terms), (updates["batch_stats"], terms)


def train_protein_head(features: Sequence[np.ndarray], records: Sequence[datasets.ProteinRecord],
                       config: TrainConfig = TrainConfig(batch_size=64), head=None, out_dir=None,
                       progress: bool = True):
    """Trains ``head`` (default :class:`LocalizationFNN`); early stopping on validation Q10.

    Returns:
      ``(best variables {params, batch_stats}, history)``.
    """
    head = head or LocalizationFNN()
    train_idx, val_idx = split_validation(len(records), config.validation_fraction, config.seed)
    key = jax.random.key(config.seed)
    init_key, key = jax.random.split(key)
    variables = jax.jit(head.init)(init_key, *sample_inputs(head, features[0].shape[-1]))  # one compile, not one per op
    params, batch_stats = variables["params"], variables["batch_stats"]
    optimizer = optax.adam(config.learning_rate)
    opt_state = jax.jit(optimizer.init)(params)

    @jax.jit
    def step(params, batch_stats, opt_state, batch, rng):
        (_, (batch_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, head,
                                                                                      batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, terms

    rng = np.random.default_rng(config.seed)
    history, best_vars, stopper = [], {"params": params, "batch_stats": batch_stats}, EarlyStopping(config.patience)
    val_f, val_r = [features[i] for i in val_idx], [records[i] for i in val_idx]
    for epoch in range(1, config.max_epochs + 1):
        totals: dict = {}
        order = rng.permutation(train_idx)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            if len(idx) < 2:  # BatchNorm needs two examples
                continue
            batch = _pack([features[i] for i in idx], head)
            batch["location"] = np.array([records[i].location for i in idx], np.int32)
            batch["membrane"] = np.array([records[i].membrane for i in idx], np.int32)
            key, sub = jax.random.split(key)
            params, batch_stats, opt_state, terms = step(params, batch_stats, opt_state, batch, sub)
            totals = add_terms(totals, terms)
        current = {"params": params, "batch_stats": batch_stats}
        val = evaluate_protein_head(current, head, val_f, val_r, n_boot=2)
        history.append({"epoch": epoch, "train_loss": float(loss_from_terms(totals)) if totals else float("nan"),
                        "val_loss": val["loss"], "val_q10": val["location"]["accuracy"],
                        "val_q2": val["membrane"]["accuracy"] if val["membrane"] else float("nan")})
        if progress:
            print(f"[epoch {epoch}] {LOSS_NAME} train={history[-1]['train_loss']:.4f} val={val['loss']:.4f} "
                  f"val_Q10={history[-1]['val_q10']:.4f} val_Q2={history[-1]['val_q2']:.4f}", flush=True)
        if stopper.update(history[-1]["val_q10"]):
            best_vars = current
            if out_dir is not None:
                save_head(out_dir, best_vars, {"kind": "localization", "head_class": type(head).__name__,
                                               "epoch": epoch, "val_q10": stopper.best, "head": head_settings(head),
                                               "input_dim": int(features[0].shape[-1])})
        elif stopper.stop:
            break
    return best_vars, history


@functools.partial(jax.jit, static_argnums=0)
def _logits(head, variables, batch):
    return _apply(head, variables, batch, False)[0]


def _all_logits(variables, head, features: Sequence[np.ndarray], batch_size: int) -> dict:
    """``{location: [n, 10], membrane: [n, 2]}`` logits, in batches."""
    parts = [jax.device_get(_logits(head, variables, _pack(features[s:s + batch_size], head)))
             for s in range(0, len(features), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("location", "membrane")}


def predict_protein_head(variables, head, features: Sequence[np.ndarray], batch_size: int = 64) -> dict:
    """``{location: [n, 10], membrane: [n, 2]}`` probabilities."""
    return {k: np.asarray(jax.nn.softmax(v)) for k, v in _all_logits(variables, head, features, batch_size).items()}


def evaluate_protein_head(variables, head, features, records, n_boot: int = 1000, seed: int = 0) -> dict:
    """Q10 over all proteins and Q2 over those with a known membrane label, with MCC, confusion and SE, and the
    loss (the training objective's, :func:`loss_from_terms`, over these proteins)."""
    logits = _all_logits(variables, head, features, 64)
    probs = {k: np.asarray(jax.nn.softmax(v)) for k, v in logits.items()}
    labels = {"location": np.array([r.location for r in records], np.int32),
              "membrane": np.array([r.membrane for r in records], np.int32)}
    loss = float(loss_from_terms(loss_terms(logits, labels)))
    loc_true = np.array([r.location for r in records])
    mem_true = np.array([r.membrane for r in records])
    known = mem_true >= 0
    membrane = None  # a set without M/S labels (setHARD) has no Q2
    if known.any():
        membrane = metrics.protein_scores(mem_true[known], probs["membrane"][known].argmax(-1),
                                          ["soluble", "membrane"], n_boot=n_boot, seed=seed)
    return {"location": metrics.protein_scores(loc_true, probs["location"].argmax(-1), list(datasets.LOCATIONS),
                                               n_boot=n_boot, seed=seed),
            "membrane": membrane, "loss": loss}
