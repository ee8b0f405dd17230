"""The embedding encoder: tokenise, run data-parallel over local devices, strip special tokens, pool."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prottrans_jax import alphabet, model_io, partitioning
from prottrans_jax.embedding import recurrent
from prottrans_jax.models import configs

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class TokenScheme:
    """How a family frames a sequence: ids of the residues, tokens before and after them, which side pads."""

    residue_ids: dict[str, int]
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int
    left_pad: bool = False  # XLNet: padding before the tokens, so <sep> <cls> end every row

    @property
    def extra(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def residue_start(self, residues: int, padded_length: int) -> int:
        """Where the first of ``residues`` residues sits in a row of ``padded_length`` tokens."""
        if self.left_pad:  # ProtTrans' [pad_len - seq_len - 2 : pad_len - 2] for ProtXLNet
            return padded_length - len(self.suffix) - residues
        return len(self.prefix)

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
            if self.left_pad:
                ids[r, padded_length - len(row):] = row
            else:
                ids[r, :len(row)] = row
        return ids

    def residue_mask(self, ids):
        """``(residues per row [rows], [rows, tokens] True at residue positions)`` of encoded ``ids``."""
        lengths = jnp.sum(ids != self.pad_id, axis=1) - self.extra
        pos = jnp.arange(ids.shape[1])[None, :]
        start = (ids.shape[1] - len(self.suffix) - lengths)[:, None] if self.left_pad else len(self.prefix)
        return lengths, (pos >= start) & (pos < start + lengths[:, None])


def token_scheme(family: str) -> TokenScheme:
    """T5: residues then ``</s>`` (ProtT5's tokenizer); XLNet: residues then ``<sep> <cls>``, padded on the
    left (ProtXLNet's tokenizer); BERT family and Transformer-XL (ProtBert's vocabulary): ``[CLS]`` residues ``[SEP]``."""
    if family == "t5":
        return TokenScheme(alphabet.prot_t5_residue_ids(), (), (alphabet.PROT_T5_EOS_ID,), alphabet.PROT_T5_PAD_ID)
    if family == "xlnet":
        return _xlnet_scheme()
    ids = alphabet.prot_bert_residue_ids()
    tokens = alphabet.prot_bert_tokens()
    return TokenScheme(ids, (tokens.index("[CLS]"),), (tokens.index("[SEP]"),), tokens.index("[PAD]"))


def _xlnet_scheme() -> TokenScheme:
    """ProtXLNet's tokenizer (:mod:`prottrans_jax.xlnet_alphabet`): X is ``<unk>``, ``<sep> <cls>`` last, left padding."""
    from prottrans_jax import xlnet_alphabet as xa

    return TokenScheme(xa.residue_ids(), (), (xa.SEP_ID, xa.CLS_ID), xa.PAD_ID, left_pad=True)


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
      family: 't5', 'bert', 'albert', 'electra', 'xlnet' or 'transfo_xl'.
      hidden_size: embedding width.
      layer: the hidden-state index returned (see :func:`resolve_layer`).
      dtype: compute dtype name.
      num_devices: devices each batch is split over (rows must be a multiple of it).
      memory_pools: memories those devices hold rows in (1 on CPU, where they share the host's RAM).
      segment_length, memory_length: XLNet and Transformer-XL: tokens per segment and memory positions
        carried between segments (:mod:`recurrent`); None for the other families.
    """

    def __init__(self, model: model_io.LoadedModel, *, layer: Optional[int] = None, dtype: str = "float32",
                 devices: Optional[Sequence[Any]] = None, segment_length: Optional[int] = None,
                 memory_length: Optional[int] = None):
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"dtype {dtype!r} not in {tuple(COMPUTE_DTYPES)}")
        _, config, params = model_io.encoder_of(model)
        jdtype = COMPUTE_DTYPES[dtype]
        # Half precision keeps half-precision weights too (half the memory, as ProtTrans' half models).
        config = config.replace(dtype=jdtype, param_dtype=jnp.float32 if dtype == "float32" else jdtype,
                                scan_layers=False, remat_policy="none")
        self.family, self.dtype = model.family, dtype
        self.segment_length, self.memory_length, config = _segmentation(self.family, config, segment_length,
                                                                        memory_length)
        self.config = config
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
        if self._fn is None and self.segment_length:
            run = recurrent.runner(self.module, self.scheme, self.layer, num_layers(self.config), self.segment_length,
                                   self.memory_length)
            self._fn = jax.jit(run, in_shardings=(self._param_shardings,
                                                  partitioning.batch_sharding(self.mesh, "data", 2)))
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
        """Embeds up to ``rows`` residue strings padded to ``padded_length`` tokens (XLNet, Transformer-XL: past
        one segment, to whole segments).

        Returns:
          ``(per_residue, per_protein)``: a list of ``[L_i, hidden]`` arrays (special tokens dropped;
          None unless ``per_residue``) and ``[len(sequences), hidden]`` means over the residues.
        """
        if rows % self.num_devices:
            raise ValueError(f"rows {rows} must be a multiple of the {self.num_devices} devices")
        if self.segment_length and padded_length > self.segment_length:
            padded_length = -(-padded_length // self.segment_length) * self.segment_length
        ids = self.scheme.encode(sequences, rows, padded_length)
        with partitioning.mesh_context(self.mesh, partitioning.get_rules("data")):
            states, pooled = self._compiled()(self.params, ids)
        pooled = np.asarray(jax.device_get(pooled))[:len(sequences)]
        if not per_residue:
            return None, pooled
        states = np.asarray(jax.device_get(states))
        starts = [self.scheme.residue_start(len(s), padded_length) for s in sequences]
        return [states[r, start:start + len(s)] for r, (s, start) in enumerate(zip(sequences, starts))], pooled


def _segmentation(family: str, config: Any, segment_length: Optional[int], memory_length: Optional[int]):
    """``(segment length, memory length, config to embed with)``: Nones and ``config`` for non-recurrent families.

    Raises:
      ValueError: a segment or memory length for a family without memory, or a segment length below 1.
    """
    if family not in model_io.AUTOREGRESSIVE_FAMILIES:
        if segment_length is not None or memory_length is not None:
            raise ValueError(f"--segment-length and --mem-len apply to ProtXLNet and ProtTXL only, not to a {family} "
                             "model (it embeds each protein whole)")
        return None, None, config
    if segment_length is not None and segment_length < 1:
        raise ValueError(f"--segment-length {segment_length}: a segment must hold at least 1 token")
    memory = recurrent.memory_length(config, memory_length)
    return segment_length or recurrent.DEFAULT_SEGMENT_LENGTH, memory, recurrent.embedding_config(config, memory)

