"""Fine-tuning an encoder with a head end to end: fully, or LoRA (rank r on attention q/k/v/o; layer norms trainable).

LoRA is a transform of the parameter tree, so it works for every family without touching the models:
each adapted kernel ``W [in, out]`` is used as ``W + A @ B * (alpha / r)`` with ``A [in, r]`` (random)
and ``B [r, out]`` (zeros, so training starts from the pretrained function). Only ``A``, ``B``, the
layer norms and the head are trained; the base weights stay frozen (and are not copied per step).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from prottrans_jax import model_io, partitioning
from prottrans_jax.embedding import batching
from prottrans_jax.embedding.encoder import COMPUTE_DTYPES, token_scheme
from prottrans_jax.hf.common import flatten_params, unflatten_params
from prottrans_jax.models import configs
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
    dtype: str = "float32"  # compute dtype of the encoder; its weights stay float32


def init_lora(params: dict, rank: int, seed: int = 0) -> dict:
    """Nested ``{...: {'query': {'kernel': {'a': [in, r], 'b': [r, out]}}}}`` for every attention projection kernel."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, w in flatten_params(params).items():
        if re.search(LORA_TARGETS, path):
            fan_in, fan_out = w.shape
            out[f"{path}/a"] = (rng.standard_normal((fan_in, rank)) / np.sqrt(fan_in)).astype(np.float32)
            out[f"{path}/b"] = np.zeros((rank, fan_out), np.float32)
    if not out:
        raise ValueError("no attention kernels found for LoRA (expected .../attention/{query,key,value,out}/kernel)")
    return unflatten_params(out)


def lora_pairs(lora: Optional[dict]) -> dict[str, tuple[Any, Any]]:
    """``{kernel path: (A, B)}`` of a LoRA tree from :func:`init_lora` (empty for none)."""
    flat = flatten_params(lora or {})
    return {p[:-2]: (flat[p], flat[p[:-2] + "/b"]) for p in flat if p.endswith("/a")}


def merge(base: dict, trainable: dict, lora: Optional[dict], scale: float) -> dict:
    """The parameters the encoder sees: base, overridden by trained entries, plus the LoRA deltas."""
    flat = dict(flatten_params(base))
    flat.update(flatten_params(trainable))
    for path, (a, b) in lora_pairs(lora).items():
        flat[path] = flat[path] + (a @ b) * scale  # [in, r] x [r, out] -> [in, out]
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


@dataclasses.dataclass(frozen=True)
class Program:
    """What the compiled functions depend on besides their array arguments (hashable: a jit static argument).

    Two fine-tuners with equal programs share compiled steps (a resumed run, a restored one).
    """

    encoder: Any  # the encoder's Linen module
    head: Any  # the head's Linen module
    loss_fn: Callable
    family: str
    scale: float  # LoRA's alpha / rank
    learning_rate: float

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return optax.adamw(self.learning_rate, weight_decay=0.0)

    def forward(self, frozen, state, batch_stats, ids, train: bool, rng):
        """``(head outputs, residue mask [batch, length], batch_stats)`` for token ``ids`` [batch, tokens]."""
        scheme = token_scheme(self.family)
        params = merge(frozen, state["encoder"], state["lora"], self.scale)
        states = self.encoder.apply({"params": params}, ids, enable_dropout=False)  # [batch, tokens, width]
        start = len(scheme.prefix)
        columns = slice(start, start + ids.shape[1] - scheme.extra)  # drop </s> / [CLS] [SEP] columns
        residues = states[:, columns].astype(jnp.float32)  # [batch, length, width]
        mask = scheme.residue_mask(ids)[1][:, columns].astype(jnp.float32)  # [batch, length]
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


@functools.partial(jax.jit, static_argnums=0)
def _train_step(program: Program, frozen, state, opt_state, batch_stats, ids, labels, rng):
    def loss(s):
        out, mask, new_stats = program.forward(frozen, s, batch_stats, ids, True, rng)
        return program.loss_fn(out, labels, mask), new_stats

    (value, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(state)
    updates, opt_state = program.optimizer.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state, new_stats, value


@functools.partial(jax.jit, static_argnums=0)
def _apply(program: Program, frozen, state, batch_stats, ids, labels):
    """``(softmaxed outputs, loss or 0)`` in inference mode."""
    out, mask, _ = program.forward(frozen, state, batch_stats, ids, False, jax.random.key(0))
    loss = program.loss_fn(out, labels, mask) if labels is not None else jnp.zeros(())
    return jax.tree_util.tree_map(jax.nn.softmax, out), loss


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_head(head, width: int, seed: int):
    return head.init(jax.random.key(seed), *sample_inputs(head, width))


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
        if config.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"dtype {config.dtype!r} not in {tuple(COMPUTE_DTYPES)}")
        self.config, self.head, self.loss_fn = config, head, loss_fn
        _, enc_config, params = model_io.encoder_of(model)
        self.base_config = enc_config  # the encoder's own config (what an export writes)
        self.encoder = configs.build_model(enc_config.replace(dtype=COMPUTE_DTYPES[config.dtype]), encoder_only=True)
        self.family = model.family
        self.scheme = token_scheme(model.family)
        self.mesh = partitioning.make_mesh(mesh_shape, devices)
        self.rules = partitioning.get_rules(rules)
        self.num_data = self.mesh.shape["data"] * self.mesh.shape.get("fsdp", 1)
        shardings = partitioning.params_shardings(self.encoder, self.mesh, self.rules)
        params = partitioning.shard_params(jax.tree_util.tree_map(np.asarray, params), shardings)
        self.frozen, trainable = split_trainable(params, config.mode)
        self.scale = config.alpha / config.rank
        self.program = Program(self.encoder, head, loss_fn, model.family, self.scale, config.learning_rate)
        lora = init_lora(params, config.rank, config.seed) if config.mode == "lora" else {}
        self.max_positions = getattr(enc_config, "max_position_embeddings", None)  # BERT family; T5 has none
        self.width = getattr(enc_config, "d_model", None) or enc_config.hidden_size
        head_vars = _init_head(head, self.width, config.seed)
        self.state = self._on_mesh({"encoder": trainable, "lora": lora, "head": head_vars["params"]})
        self.batch_stats = self._on_mesh(head_vars.get("batch_stats", {}))
        self.opt_state = self._on_mesh(self.program.optimizer.init(self.state))

    @property
    def lora(self) -> dict[str, tuple[Any, Any]]:
        """``{kernel path: (A, B)}`` of the current adapters (empty in 'full' mode)."""
        return lora_pairs(self.state["lora"])

    @property
    def rows(self) -> int:
        """Rows of every batch: the batch size rounded to a multiple of the data-parallel devices."""
        return max(self.num_data, self.config.batch_size // self.num_data * self.num_data)

    def _on_mesh(self, tree):
        """Arrays not yet laid out on the mesh (host arrays, single-device ones) -> replicated over it."""
        replicated = NamedSharding(self.mesh, PartitionSpec())

        def put(x):
            sharding = getattr(x, "sharding", None)
            if isinstance(sharding, NamedSharding) and sharding.mesh == self.mesh:
                return x
            return jax.device_put(x, replicated)

        return jax.tree_util.tree_map(put, tree)

    def trainable_count(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(self.state)))

    def _shard(self, tree):
        """Places a batch (numpy) split along 'batch' over the mesh."""
        return jax.tree_util.tree_map(
            lambda x: jax.device_put(x, partitioning.batch_sharding(self.mesh, self.rules, np.ndim(x))), tree)

    def batches(self, sequences: Sequence[str], rng: Optional[np.random.Generator] = None):
        """``(indices, ids)`` batches over the data axis of the mesh, bucket-padded."""
        order = list(range(len(sequences))) if rng is None else list(rng.permutation(len(sequences)))
        edges = batching.bucket_edges(max(len(s) for s in sequences) + self.scheme.extra, limit=self.max_positions)
        for start in range(0, len(order), self.rows):
            idx = order[start:start + self.rows]
            padded = batching.bucket_of(max(len(sequences[i]) for i in idx) + self.scheme.extra, edges)
            yield idx, self.scheme.encode([sequences[i] for i in idx], self.rows, padded)

    def train_epoch(self, sequences: Sequence[str], make_labels, rng: np.random.Generator, key,
                    on_step: Optional[Callable[[float], None]] = None) -> list[float]:
        """One pass; ``make_labels(indices, rows, length) -> dict of arrays``. Returns the step losses.

        ``on_step(loss)`` is called after each step (a progress bar).
        """
        losses = []
        with partitioning.mesh_context(self.mesh, self.rules):
            for idx, ids in self.batches(sequences, rng):
                key, sub = jax.random.split(key)
                labels = make_labels(idx, ids.shape[0], ids.shape[1] - self.scheme.extra)
                self.state, self.opt_state, self.batch_stats, loss = _train_step(
                    self.program, self.frozen, self.state, self.opt_state, self.batch_stats, self._shard(ids),
                    self._shard(labels), sub)
                losses.append(float(loss))
                if on_step is not None:
                    on_step(losses[-1])
        return losses

    def predict(self, sequences: Sequence[str], make_labels=None):
        """Head outputs (softmaxed) per sequence: per-residue arrays cut to length, or per-protein vectors.

        With ``make_labels`` (as for :meth:`train_epoch`), returns ``(outputs, mean batch loss)`` instead.
        """
        out: list = [None] * len(sequences)
        losses = []
        with partitioning.mesh_context(self.mesh, self.rules):
            for idx, ids in self.batches(sequences):
                labels = None if make_labels is None else self._shard(
                    make_labels(idx, ids.shape[0], ids.shape[1] - self.scheme.extra))
                probs, loss = _apply(self.program, self.frozen, self.state, self.batch_stats, self._shard(ids), labels)
                probs = jax.device_get(probs)
                losses.append(float(loss))
                for j, i in enumerate(idx):
                    out[i] = {k: (v[j, :len(sequences[i])] if v.ndim == 3 else v[j]) for k, v in probs.items()}
        return out if make_labels is None else (out, float(np.mean(losses)))

    def checkpoint_state(self) -> dict:
        """Everything training changes, as a tree Orbax saves (no empty subtrees; optimizer state as a list)."""
        tree = {"state": {k: v for k, v in self.state.items() if v},
                "opt_state": jax.tree_util.tree_leaves(self.opt_state)}
        if self.batch_stats:
            tree["batch_stats"] = self.batch_stats
        return tree

    def load_checkpoint_state(self, tree: dict) -> None:
        """Takes back what :meth:`checkpoint_state` gave (e.g. restored from a checkpoint)."""
        self.state = {k: tree["state"].get(k, {}) for k in self.state}
        self.opt_state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self.opt_state),
                                                      list(tree["opt_state"]))
        self.batch_stats = tree.get("batch_stats", {})


def merged_encoder_params(tuner: Finetuner) -> dict:
    """The fine-tuned encoder's full parameters (LoRA folded in), e.g. to export them."""
    return jax.device_get(merge(tuner.frozen, tuner.state["encoder"], tuner.state["lora"], tuner.scale))


def merged_encoder(tuner: Finetuner, source: str, step: Optional[int] = None) -> model_io.LoadedModel:
    """The fine-tuned encoder (LoRA merged) as an encoder-only model that ``export_model`` and the embedder take."""
    architecture = next(a for a in model_io.ENCODER_ONLY_ARCHITECTURES if model_io.family_of(a) == tuner.family)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), merged_encoder_params(tuner))
    return model_io.LoadedModel(tuner.base_config, params, architecture, source, step)


# ---------------------------------------------------------------------------------------
# The two tasks: losses on head outputs and the label batches they read.
# ---------------------------------------------------------------------------------------
def residue_loss(out: dict, labels: dict, mask) -> jax.Array:
    """``heads train``'s objective: DSSP3 + DSSP8 cross entropy per resolved residue, plus disorder per residue."""
    from prottrans_jax.downstream import residue_training

    return residue_training.loss_from_terms(residue_training.loss_terms(out, {**labels, "mask": mask}))


def residue_labels(records: Sequence) -> Callable[[Sequence[int], int, int], dict]:
    """``make_labels(indices, rows, length)`` for NetSurfP records: ``[rows, length]`` classes and masks."""
    def make(idx, rows, length):
        out = {k: np.zeros((rows, length), np.int32) for k in ("dssp3", "dssp8", "disorder")}
        out["resolved"] = np.zeros((rows, length), np.float32)
        for j, i in enumerate(idx):
            r, n = records[i], len(records[i].sequence)
            out["dssp3"][j, :n], out["dssp8"][j, :n] = r.dssp3, r.dssp8
            out["disorder"][j, :n] = out["resolved"][j, :n] = r.resolved  # class 1 = resolved
        return out

    return make


def protein_loss(out: dict, labels: dict, mask) -> jax.Array:
    """``heads train``'s objective (location per protein, plus membrane per protein with a known M/S label), over
    the real rows of a batch (``labels['real']``: 0 for the padding rows of a last batch)."""
    from prottrans_jax.downstream import protein_training

    ce = optax.softmax_cross_entropy_with_integer_labels
    real = labels["real"]  # [batch]
    known = real * (labels["membrane"] >= 0)
    return protein_training.loss_from_terms({
        "location": jnp.sum(ce(out["location"], labels["location"]) * real), "proteins": jnp.sum(real),
        "membrane": jnp.sum(ce(out["membrane"], jnp.maximum(labels["membrane"], 0)) * known), "known": jnp.sum(known)})


def protein_labels(records: Sequence) -> Callable[[Sequence[int], int, int], dict]:
    """``make_labels(indices, rows, length)`` for DeepLoc records: ``[rows]`` location, membrane and real-row flags."""
    def make(idx, rows, length):
        out = {"location": np.zeros(rows, np.int32), "membrane": np.full(rows, -1, np.int32),
               "real": np.zeros(rows, np.float32)}
        for j, i in enumerate(idx):
            out["location"][j], out["membrane"][j], out["real"][j] = records[i].location, records[i].membrane, 1
        return out

    return make


def crop(record, length: int):
    """A record cut to its first ``length`` residues (labels too)."""
    if len(record.sequence) <= length:
        return record
    cut = {f.name: getattr(record, f.name)[:length] for f in dataclasses.fields(record)
           if isinstance(getattr(record, f.name), (str, np.ndarray)) and f.name != "id"}
    return dataclasses.replace(record, **cut)
