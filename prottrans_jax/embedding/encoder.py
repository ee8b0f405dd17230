"""The embedding encoder: tokenise, run data-parallel over local devices, strip special tokens, pool."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prottrans_jax import alphabet, model_io, partitioning
from prottrans_jax.models import configs

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class TokenScheme:
    """How a family frames a sequence: ids of the residues, tokens before and after them."""

    residue_ids: dict[str, int]
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int

    @property
    def extra(self) -> int:
        return len(self.prefix) + len(self.suffix)

    @functools.cached_property
    def _table(self) -> np.ndarray:
        table = np.full(256, -1, np.int32)  # byte -> id, -1 for letters without one
        for residue, i in self.residue_ids.items():
            table[ord(residue)] = i
        return table

    def encode(self, sequences: Sequence[str], rows: int, padded_length: int) -> np.ndarray:
        """``[rows, padded_length]`` int32 ids, framed by prefix/suffix; rows past the sequences are all padding."""
        ids = np.full((rows, padded_length), self.pad_id, np.int32)
        pre, suf = np.asarray(self.prefix, np.int32), np.asarray(self.suffix, np.int32)
        for r, seq in enumerate(sequences):
            codes = self._table[np.frombuffer(seq.encode("ascii"), np.uint8)]
            if (codes < 0).any():
                raise ValueError(f"residue {seq[int(np.argmax(codes < 0))]!r} has no id in this vocabulary "
                                 "(normalise first)")
            row = np.concatenate([pre, codes, suf])
            ids[r, :len(row)] = row
        return ids

    def residue_mask(self, ids):
        """``(residues per row [rows], [rows, tokens] True at residue positions)`` of encoded ``ids``."""
        lengths = jnp.sum(ids != self.pad_id, axis=1) - self.extra
        pos = jnp.arange(ids.shape[1])[None, :]
        start = len(self.prefix)
        return lengths, (pos >= start) & (pos < start + lengths[:, None])


def token_scheme(family: str) -> TokenScheme:
    """T5: residues then ``</s>`` (ProtT5's tokenizer); BERT family: ``[CLS]`` residues ``[SEP]``."""
    if family == "t5":
        return TokenScheme(alphabet.prot_t5_residue_ids(), (), (alphabet.PROT_T5_EOS_ID,), alphabet.PROT_T5_PAD_ID)
    ids = alphabet.prot_bert_residue_ids()
    tokens = alphabet.prot_bert_tokens()
    return TokenScheme(ids, (tokens.index("[CLS]"),), (tokens.index("[SEP]"),), tokens.index("[PAD]"))


def num_layers(config: Any) -> int:
    return getattr(config, "num_encoder_layers", None) or config.num_layers


def resolve_layer(layer: Optional[int], config: Any) -> int:
    """HF's ``hidden_states`` index: 0 the embeddings, ``n`` (or -1, the default) the final output.

    Raises:
      ValueError: for a layer the model does not have.
    """
    n = num_layers(config)
    layer = n if layer is None else layer
    if not -(n + 1) <= layer <= n:
        raise ValueError(f"--layer {layer}: the encoder has layers 0 (embeddings) to {n} (final output), "
                         f"or -1 to -{n + 1} counting back")
    return layer % (n + 1)


class Embedder:
    """Runs one model's encoder on batches of residue strings.

    Attributes:
      family: 't5', 'bert', 'albert' or 'electra'.
      hidden_size: embedding width.
      layer: the hidden-state index returned (see :func:`resolve_layer`).
      dtype: compute dtype name.
      num_devices: devices each batch is split over (rows must be a multiple of it).
      memory_pools: memories those devices hold rows in (1 on CPU, where they share the host's RAM).
    """

    def __init__(self, model: model_io.LoadedModel, *, layer: Optional[int] = None, dtype: str = "float32",
                 devices: Optional[Sequence[Any]] = None):
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"dtype {dtype!r} not in {tuple(COMPUTE_DTYPES)}")
        _, config, params = model_io.encoder_of(model)
        jdtype = COMPUTE_DTYPES[dtype]
        # Half precision keeps half-precision weights too (half the memory, as ProtTrans' half models).
        config = config.replace(dtype=jdtype, param_dtype=jnp.float32 if dtype == "float32" else jdtype,
                                scan_layers=False, remat_policy="none")
        self.family, self.dtype, self.config = model.family, dtype, config
        self.layer = resolve_layer(layer, config)
        self.hidden_size = getattr(config, "d_model", None) or config.hidden_size
        self.scheme = token_scheme(self.family)
        self.module = configs.build_model(config, encoder_only=True)
        devices = list(devices or jax.local_devices())
        self.num_devices = len(devices)
        self.memory_pools = 1 if devices[0].platform == "cpu" else len(devices)
        self.mesh = partitioning.make_mesh({"data": len(devices)}, devices)
        shardings = partitioning.params_shardings(self.module, self.mesh, "data")
        cast = jax.tree_util.tree_map(lambda v: np.asarray(v, config.param_dtype), params)
        self.params = partitioning.shard_params(cast, shardings)
        self._param_shardings = shardings
        self._fn = None
        self.max_positions = getattr(config, "max_position_embeddings", None)

    @property
    def special_tokens(self) -> int:
        """Tokens added around each sequence (dropped from the embeddings)."""
        return self.scheme.extra

    def rows_per_memory(self, rows: int) -> int:
        """Rows of a ``rows``-row batch that one memory holds (see :func:`limits.peak_bytes`)."""
        return -(-rows // self.memory_pools)

    def _compiled(self):
        if self._fn is None:
            module, layer, n = self.module, self.layer, num_layers(self.config)

            def run(params, ids):  # ids: [rows, length]
                out = module.apply({"params": params}, ids, output_hidden_states=layer != n)
                states = out if layer == n else out[1][layer]  # [rows, length, hidden]
                lengths, residue = self.scheme.residue_mask(ids)  # [rows], [rows, length]
                total = jnp.sum(jnp.where(residue[..., None], states.astype(jnp.float32), 0.0), axis=1)
                pooled = total / jnp.maximum(lengths, 1)[:, None].astype(jnp.float32)  # [rows, hidden]
                return states, pooled

            batch = partitioning.batch_sharding(self.mesh, "data", 2)
            self._fn = jax.jit(run, in_shardings=(self._param_shardings, batch))
        return self._fn

    def embed(self, sequences: Sequence[str], rows: int, padded_length: int,
              per_residue: bool = True) -> tuple[list[np.ndarray] | None, np.ndarray]:
        """Embeds up to ``rows`` residue strings padded to ``padded_length`` tokens.

        Returns:
          ``(per_residue, per_protein)``: a list of ``[L_i, hidden]`` arrays (special tokens dropped;
          None unless ``per_residue``) and ``[len(sequences), hidden]`` means over the residues.
        """
        if rows % self.num_devices:
            raise ValueError(f"rows {rows} must be a multiple of the {self.num_devices} devices")
        ids = self.scheme.encode(sequences, rows, padded_length)
        with partitioning.mesh_context(self.mesh, partitioning.get_rules("data")):
            states, pooled = self._compiled()(self.params, ids)
        pooled = np.asarray(jax.device_get(pooled))[:len(sequences)]
        if not per_residue:
            return None, pooled
        states = np.asarray(jax.device_get(states))
        start = len(self.scheme.prefix)
        return [states[r, start:start + len(s)] for r, s in enumerate(sequences)], pooled

