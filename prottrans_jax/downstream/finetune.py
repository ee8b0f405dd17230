"""Fine-tuning an encoder with a head end to end: fully, or LoRA (rank r on attention q/k/v/o; layer norms trainable).

LoRA is a transform of the parameter tree, so it works for every family without touching the models:
each adapted kernel ``W [in, out]`` is used as ``W + A @ B * (alpha / r)`` with ``A [in, r]`` (random)
and ``B [r, out]`` (zeros, so training starts from the pretrained function). Only ``A``, ``B``, the
layer norms and the head are trained; the base weights stay frozen (and are not copied per step).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prottrans_jax import model_io, partitioning
from prottrans_jax.embedding import batching
from prottrans_jax.embedding.encoder import token_scheme
from prottrans_jax.hf.common import flatten_params, unflatten_params
from prottrans_jax.models.heads import sample_inputs, takes_residues

LORA_TARGETS = r"(attention|self_attention)/(query|key|value|out)/kernel$"
NORM_PATTERN = r"(layer_norm|LayerNorm|_norm)/(scale|bias)$"


@dataclasses.dataclass
class FinetuneConfig:
    """What is trained and how."""

    mode: str = "lora"  # 'lora' or 'full'
    rank: int = 4
    alpha: float = 8.0
    learning_rate: float = 3e-4
    batch_size: int = 8
    max_tokens: int = 4000
    epochs: int = 1
    seed: int = 0


def init_lora(params: dict, rank: int, seed: int = 0) -> dict:
    """``{path: {'a': [in, r], 'b': [r, out]}}`` for every attention projection kernel."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, w in flatten_params(params).items():
        if re.search(LORA_TARGETS, path):
            fan_in, fan_out = w.shape
            out[path] = {"a": (rng.standard_normal((fan_in, rank)) / np.sqrt(fan_in)).astype(np.float32),
                         "b": np.zeros((rank, fan_out), np.float32)}
    if not out:
        raise ValueError("no attention kernels found for LoRA (expected .../attention/{query,key,value,out}/kernel)")
    return out


def merge(base: dict, trainable: dict, lora: Optional[dict], scale: float) -> dict:
    """The parameters the encoder sees: base, overridden by trained entries, plus the LoRA deltas."""
    flat = dict(flatten_params(base))
    flat.update(flatten_params(trainable))
    for path, ab in (lora or {}).items():
        flat[path] = flat[path] + (ab["a"] @ ab["b"]) * scale  # [in, r] x [r, out] -> [in, out]
    return unflatten_params(flat)


def split_trainable(params: dict, mode: str) -> tuple[dict, dict]:
    """``(frozen, trainable)``: LoRA trains only the layer norms of the encoder; 'full' trains everything."""
    flat = flatten_params(params)
    if mode == "full":
        return {}, params
    if mode != "lora":
        raise ValueError(f"mode {mode!r}: expected 'lora' or 'full'")
    norms = {k: v for k, v in flat.items() if re.search(NORM_PATTERN, k)}
    return unflatten_params({k: v for k, v in flat.items() if k not in norms}), unflatten_params(norms)


class Finetuner:
    """An encoder (from any loadable model) with a head, trained end to end on per-residue or per-protein labels.

    Args:
      model: a :class:`~prottrans_jax.model_io.LoadedModel` (our checkpoint, t5x's, or imported HF weights).
      head: a head module (``SecondaryStructureCNN``; ``LocalizationFNN`` on mean-pooled states; ``LightAttention``).
      loss_fn: ``loss_fn(head_out, labels: dict, mask [batch, length]) -> scalar``.
      config: :class:`FinetuneConfig`.
      mesh_shape: e.g. ``{'data': 2, 'model': 4}`` (default: all devices data-parallel).
      rules: logical axis rules, as the trainer's ('data', 'model', 'fsdp').
      devices: the devices of the mesh (default all).
    """

    def __init__(self, model: model_io.LoadedModel, head, loss_fn, config: FinetuneConfig = FinetuneConfig(),
                 mesh_shape: Optional[dict] = None, rules: Any = "data", devices: Optional[Sequence[Any]] = None):
        self.config, self.head, self.loss_fn = config, head, loss_fn
        encoder, enc_config, params = model_io.encoder_of(model)
        self.encoder, self.family = encoder, model.family
        self.scheme = token_scheme(model.family)
        self.mesh = partitioning.make_mesh(mesh_shape, devices)
        self.rules = partitioning.get_rules(rules)
        self.num_data = self.mesh.shape["data"] * self.mesh.shape.get("fsdp", 1)
        shardings = partitioning.params_shardings(encoder, self.mesh, self.rules)
        params = partitioning.shard_params(jax.tree_util.tree_map(np.asarray, params), shardings)
        self.frozen, trainable = split_trainable(params, config.mode)
        self.scale = config.alpha / config.rank
        self.lora = init_lora(params, config.rank, config.seed) if config.mode == "lora" else None
        self.max_positions = getattr(enc_config, "max_position_embeddings", None)  # BERT family; T5 has none
        width = getattr(enc_config, "d_model", None) or enc_config.hidden_size
        head_vars = head.init(jax.random.key(config.seed), *sample_inputs(head, width))
        self.state = {"encoder": trainable, "lora": self.lora, "head": head_vars["params"]}
        self.batch_stats = head_vars.get("batch_stats", {})
        self.optimizer = optax.adamw(config.learning_rate, weight_decay=0.0)
        self.opt_state = self.optimizer.init(self.state)
        self._step = None

    def trainable_count(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(self.state)))

    def _forward(self, state, batch_stats, ids, train: bool, rng):
        params = merge(self.frozen, state["encoder"], state["lora"], self.scale)
        states = self.encoder.apply({"params": params}, ids, enable_dropout=False)  # [batch, tokens, width]
        start = len(self.scheme.prefix)
        columns = slice(start, start + ids.shape[1] - self.scheme.extra)  # drop </s> / [CLS] [SEP] columns
        residues = states[:, columns].astype(jnp.float32)  # [batch, length, width]
        mask = self.scheme.residue_mask(ids)[1][:, columns].astype(jnp.float32)  # [batch, length]
        variables = {"params": state["head"], **({"batch_stats": batch_stats} if batch_stats else {})}
        if takes_residues(self.head):
            args = (residues, mask)
        else:
            args = (jnp.sum(residues * mask[..., None], 1) / jnp.maximum(mask.sum(1, keepdims=True), 1),)
        kwargs = {"train": train, "rngs": {"dropout": rng}}
        if batch_stats:
            out, updates = self.head.apply(variables, *args, mutable=["batch_stats"] if train else [], **kwargs)
            return out, mask, updates.get("batch_stats", batch_stats)
        return self.head.apply(variables, *args, **kwargs), mask, batch_stats

    def _compiled_step(self):
        if self._step is None:
            def step(state, opt_state, batch_stats, ids, labels, rng):
                def loss(s):
                    out, mask, new_stats = self._forward(s, batch_stats, ids, True, rng)
                    return self.loss_fn(out, labels, mask), new_stats
                (value, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(state)
                updates, opt_state = self.optimizer.update(grads, opt_state, state)
                return optax.apply_updates(state, updates), opt_state, new_stats, value

            self._step = jax.jit(step)
        return self._step

    def _shard(self, tree):
        """Places a batch (numpy) split along 'batch' over the mesh."""
        return jax.tree_util.tree_map(
            lambda x: jax.device_put(x, partitioning.batch_sharding(self.mesh, self.rules, np.ndim(x))), tree)

    def batches(self, sequences: Sequence[str], rng: Optional[np.random.Generator] = None):
        """``(indices, ids)`` batches over the data axis of the mesh, bucket-padded."""
        order = list(range(len(sequences))) if rng is None else list(rng.permutation(len(sequences)))
        edges = batching.bucket_edges(max(len(s) for s in sequences) + self.scheme.extra, limit=self.max_positions)
        rows = max(self.num_data, self.config.batch_size // self.num_data * self.num_data)
        for start in range(0, len(order), rows):
            idx = order[start:start + rows]
            padded = batching.bucket_of(max(len(sequences[i]) for i in idx) + self.scheme.extra, edges)
            yield idx, self.scheme.encode([sequences[i] for i in idx], rows, padded)

    def train_epoch(self, sequences: Sequence[str], make_labels, rng: np.random.Generator, key) -> list[float]:
        """One pass; ``make_labels(indices, rows, length) -> dict of arrays``. Returns the step losses."""
        losses = []
        step = self._compiled_step()
        with partitioning.mesh_context(self.mesh, self.rules):
            for idx, ids in self.batches(sequences, rng):
                key, sub = jax.random.split(key)
                labels = make_labels(idx, ids.shape[0], ids.shape[1] - self.scheme.extra)
                self.state, self.opt_state, self.batch_stats, loss = step(
                    self.state, self.opt_state, self.batch_stats, self._shard(ids), self._shard(labels), sub)
                losses.append(float(loss))
        return losses

    def predict(self, sequences: Sequence[str]) -> list:
        """Head outputs (softmaxed) per sequence: per-residue arrays cut to length, or per-protein vectors."""
        apply = jax.jit(lambda s, st, ids: self._forward(s, st, ids, False, jax.random.key(0))[0])
        out: list = [None] * len(sequences)
        with partitioning.mesh_context(self.mesh, self.rules):
            for idx, ids in self.batches(sequences):
                logits = apply(self.state, self.batch_stats, self._shard(ids))
                probs = jax.device_get(jax.tree_util.tree_map(jax.nn.softmax, logits))
                for j, i in enumerate(idx):
                    out[i] = {k: (v[j, :len(sequences[i])] if v.ndim == 3 else v[j]) for k, v in probs.items()}
        return out


def merged_encoder_params(tuner: Finetuner) -> dict:
    """The fine-tuned encoder's full parameters (LoRA folded in), e.g. to export them."""
    return jax.device_get(merge(tuner.frozen, tuner.state["encoder"], tuner.state["lora"], tuner.scale))
