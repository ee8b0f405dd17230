"""HuggingFace T5 <-> prottrans-jax weight map (a table) and ``import_t5`` / ``export_t5``."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from prottrans_jax.hf.common import (
    IDENTITY,
    TRANSPOSE,
    CheckpointError,
    TensorReader,
    expand_rows,
    export_table,
    module_param_shapes,
    nest_params,
    read_config_json,
    read_table,
    write_hf_folder,
)
from prottrans_jax.models.t5 import T5Config, T5EncoderDecoder, T5EncoderModel

# ---------------------------------------------------------------------------------------
# The table: (HF tensor name, our parameter path, transform). `{i}` is the block index.
# torch Linear weights are [out, in] and our kernels [in, out]; HF's relative bias table is
# [buckets, heads] and ours [heads, buckets]: both are a transpose.
# ---------------------------------------------------------------------------------------
T5_EMBEDDING_ROWS = (("shared.weight", "token_embedder/embedding", IDENTITY),)

T5_ENCODER_ROWS = (
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder/relpos_bias/rel_embedding",
     TRANSPOSE),
    ("encoder.block.{i}.layer.0.SelfAttention.q.weight", "encoder/layers_{i}/attention/query/kernel", TRANSPOSE),
    ("encoder.block.{i}.layer.0.SelfAttention.k.weight", "encoder/layers_{i}/attention/key/kernel", TRANSPOSE),
    ("encoder.block.{i}.layer.0.SelfAttention.v.weight", "encoder/layers_{i}/attention/value/kernel", TRANSPOSE),
    ("encoder.block.{i}.layer.0.SelfAttention.o.weight", "encoder/layers_{i}/attention/out/kernel", TRANSPOSE),
    ("encoder.block.{i}.layer.0.layer_norm.weight", "encoder/layers_{i}/pre_attention_layer_norm/scale", IDENTITY),
    ("encoder.block.{i}.layer.1.layer_norm.weight", "encoder/layers_{i}/pre_mlp_layer_norm/scale", IDENTITY),
    ("encoder.final_layer_norm.weight", "encoder/encoder_norm/scale", IDENTITY),
)
T5_ENCODER_MLP_ROWS = {
    "plain": (
        ("encoder.block.{i}.layer.1.DenseReluDense.wi.weight", "encoder/layers_{i}/mlp/wi/kernel", TRANSPOSE),
        ("encoder.block.{i}.layer.1.DenseReluDense.wo.weight", "encoder/layers_{i}/mlp/wo/kernel", TRANSPOSE),
    ),
    "gated": (
        ("encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight", "encoder/layers_{i}/mlp/wi_0/kernel", TRANSPOSE),
        ("encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight", "encoder/layers_{i}/mlp/wi_1/kernel", TRANSPOSE),
        ("encoder.block.{i}.layer.1.DenseReluDense.wo.weight", "encoder/layers_{i}/mlp/wo/kernel", TRANSPOSE),
    ),
}
T5_DECODER_ROWS = (
    ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "decoder/relpos_bias/rel_embedding",
     TRANSPOSE),
    ("decoder.block.{i}.layer.0.SelfAttention.q.weight", "decoder/layers_{i}/self_attention/query/kernel", TRANSPOSE),
    ("decoder.block.{i}.layer.0.SelfAttention.k.weight", "decoder/layers_{i}/self_attention/key/kernel", TRANSPOSE),
    ("decoder.block.{i}.layer.0.SelfAttention.v.weight", "decoder/layers_{i}/self_attention/value/kernel", TRANSPOSE),
    ("decoder.block.{i}.layer.0.SelfAttention.o.weight", "decoder/layers_{i}/self_attention/out/kernel", TRANSPOSE),
    ("decoder.block.{i}.layer.0.layer_norm.weight", "decoder/layers_{i}/pre_self_attention_layer_norm/scale",
     IDENTITY),
    ("decoder.block.{i}.layer.1.EncDecAttention.q.weight", "decoder/layers_{i}/encoder_decoder_attention/query/kernel",
     TRANSPOSE),
    ("decoder.block.{i}.layer.1.EncDecAttention.k.weight", "decoder/layers_{i}/encoder_decoder_attention/key/kernel",
     TRANSPOSE),
    ("decoder.block.{i}.layer.1.EncDecAttention.v.weight",
     "decoder/layers_{i}/encoder_decoder_attention/value/kernel", TRANSPOSE),
    ("decoder.block.{i}.layer.1.EncDecAttention.o.weight", "decoder/layers_{i}/encoder_decoder_attention/out/kernel",
     TRANSPOSE),
    ("decoder.block.{i}.layer.1.layer_norm.weight", "decoder/layers_{i}/pre_cross_attention_layer_norm/scale",
     IDENTITY),
    ("decoder.block.{i}.layer.2.layer_norm.weight", "decoder/layers_{i}/pre_mlp_layer_norm/scale", IDENTITY),
    ("decoder.final_layer_norm.weight", "decoder/decoder_norm/scale", IDENTITY),
)
T5_DECODER_MLP_ROWS = {
    "plain": (
        ("decoder.block.{i}.layer.2.DenseReluDense.wi.weight", "decoder/layers_{i}/mlp/wi/kernel", TRANSPOSE),
        ("decoder.block.{i}.layer.2.DenseReluDense.wo.weight", "decoder/layers_{i}/mlp/wo/kernel", TRANSPOSE),
    ),
    "gated": (
        ("decoder.block.{i}.layer.2.DenseReluDense.wi_0.weight", "decoder/layers_{i}/mlp/wi_0/kernel", TRANSPOSE),
        ("decoder.block.{i}.layer.2.DenseReluDense.wi_1.weight", "decoder/layers_{i}/mlp/wi_1/kernel", TRANSPOSE),
        ("decoder.block.{i}.layer.2.DenseReluDense.wo.weight", "decoder/layers_{i}/mlp/wo/kernel", TRANSPOSE),
    ),
}
T5_LM_HEAD_ROWS = (("lm_head.weight", "decoder/logits_dense/kernel", TRANSPOSE),)
# HF tensors that carry nothing of ours: tied copies of `shared`, and a cross-attention bias HF never uses.
T5_IGNORED_TENSORS = (
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
)
T5_MODEL_TYPES = ("t5", "mt5")


def t5_weight_map(config: T5Config, encoder_only: bool = False) -> list[tuple[str, str, str]]:
    """The table rows for ``config``, expanded per layer: ``[(hf_name, our_path, transform), ...]``."""
    mlp = "gated" if len(config.mlp_activations) > 1 else "plain"
    rows = list(T5_EMBEDDING_ROWS)
    rows += expand_rows(T5_ENCODER_ROWS + T5_ENCODER_MLP_ROWS[mlp], config.num_encoder_layers)
    if not encoder_only:
        rows += expand_rows(T5_DECODER_ROWS + T5_DECODER_MLP_ROWS[mlp], config.num_decoder_layers)
        if not config.tie_word_embeddings:
            rows += list(T5_LM_HEAD_ROWS)
    return rows


def expected_param_shapes(config: T5Config, encoder_only: bool = False) -> dict[str, tuple[int, ...]]:
    """Our flat parameter shapes (unscanned), computed abstractly from the modules themselves."""
    config = config.replace(scan_layers=False, remat_policy="none")
    return module_param_shapes(T5EncoderModel(config) if encoder_only else T5EncoderDecoder(config))


# ---------------------------------------------------------------------------------------
# Configs.
# ---------------------------------------------------------------------------------------
def t5_config_from_hf(
    hf_config: Mapping[str, Any], *, untied_lm_head: bool | None = None, source: str = "config.json", **overrides
) -> T5Config:
    """Our ``T5Config`` from a HF ``config.json`` dict.

    Logits follow transformers 5: outputs are scaled by d_model**-0.5 unless the file says
    ``tie_word_embeddings: false`` (or ``scale_decoder_outputs``); the projection is the checkpoint's own
    ``lm_head.weight`` when it differs from ``shared.weight`` (``untied_lm_head``), else the embedding.

    Args:
      hf_config: the parsed config.json.
      untied_lm_head: whether the weights carry a distinct lm_head; None: trust ``tie_word_embeddings``.
      source: file name quoted in errors.
      **overrides: our fields to set (dtype, scan_layers, ...).

    Raises:
      CheckpointError: if the config is not a T5 config.
    """
    model_type = hf_config.get("model_type")
    if model_type not in T5_MODEL_TYPES:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not a T5 checkpoint (expected one of {T5_MODEL_TYPES}); "
            "use the importer of that family"
        )
    tie_json = hf_config.get("tie_word_embeddings", True)
    scale = bool(hf_config.get("scale_decoder_outputs", tie_json is not False))
    tie = bool(tie_json) if untied_lm_head is None else not untied_lm_head
    try:
        fields = _t5_fields(hf_config)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: not a usable T5 config ({type(e).__name__}: {e})") from e
    fields.update(tie_word_embeddings=tie, scale_decoder_outputs=scale, **overrides)
    return T5Config(**fields)


def _t5_fields(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    num_layers = int(hf_config.get("num_layers", 6))
    return dict(
        vocab_size=int(hf_config["vocab_size"]),
        d_model=int(hf_config["d_model"]),
        d_kv=int(hf_config["d_kv"]),
        d_ff=int(hf_config["d_ff"]),
        num_heads=int(hf_config["num_heads"]),
        num_encoder_layers=num_layers,
        num_decoder_layers=int(hf_config.get("num_decoder_layers") or num_layers),
        feed_forward_proj=hf_config.get("feed_forward_proj", "relu"),
        relative_attention_num_buckets=int(hf_config.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(hf_config.get("relative_attention_max_distance", 128)),
        dropout_rate=float(hf_config.get("dropout_rate", 0.1)),
        layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-6)),
        pad_token_id=int(hf_config.get("pad_token_id", 0) or 0),
        eos_token_id=int(hf_config.get("eos_token_id", 1)),
        decoder_start_token_id=int(hf_config.get("decoder_start_token_id", 0) or 0),
    )


def t5_config_to_hf(config: T5Config, encoder_only: bool = False, dtype: str = "float32") -> dict[str, Any]:
    """A HF ``config.json`` dict; ``tie_word_embeddings`` is always written (transformers 5 defaults it to True)."""
    hf = {
        "architectures": ["T5EncoderModel" if encoder_only else "T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "feed_forward_proj": config.feed_forward_proj,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "use_cache": True,
        "pad_token_id": config.pad_token_id,
        "eos_token_id": config.eos_token_id,
        "decoder_start_token_id": config.decoder_start_token_id,
        "tie_word_embeddings": config.tie_word_embeddings,
        "dtype": dtype,
    }
    if config.scales_decoder_outputs != config.tie_word_embeddings:
        # transformers 5 derives the scaling from tie_word_embeddings unless told otherwise.
        hf["scale_decoder_outputs"] = config.scales_decoder_outputs
    return hf


# ---------------------------------------------------------------------------------------
# Import / export.
# ---------------------------------------------------------------------------------------
def import_t5(hf_dir: str | pathlib.Path, **overrides) -> tuple[T5Config, dict]:
    """Reads a HF T5 folder (config.json + model.safetensors / sharded / pytorch_model.bin).

    A checkpoint without ``decoder.*`` tensors (``T5EncoderModel``) gives encoder-only params for
    :class:`T5EncoderModel`; otherwise params for :class:`T5EncoderDecoder`.

    Args:
      hf_dir: the folder.
      **overrides: our config fields to set (e.g. ``scan_layers=True``: params come back stacked).

    Returns:
      ``(config, params)``, params a nested dict of float32 numpy arrays.

    Raises:
      CheckpointError: wrong family, missing tensor, unexpected tensor or wrong shape (naming file and tensor).
    """
    config_path, hf_config = read_config_json(hf_dir)
    t5_config_from_hf(hf_config, source=str(config_path))  # refuse other families before reading weights
    reader = TensorReader(hf_dir)
    keys = set(reader.keys())
    encoder_only = not any(k.startswith("decoder.") for k in keys)
    untied = None
    if not encoder_only:
        # transformers 5 keeps lm_head separate only when the file carries one that differs from `shared`.
        untied = {"lm_head.weight", "shared.weight"} <= keys and (
            reader.shape("lm_head.weight") != reader.shape("shared.weight")
            or not np.array_equal(reader.get("lm_head.weight"), reader.get("shared.weight"))
        )
    config = t5_config_from_hf(hf_config, untied_lm_head=untied, source=str(config_path), **overrides)
    rows = t5_weight_map(config, encoder_only)
    _check_unexpected(reader, keys, rows)
    flat = read_table(reader, rows, expected_param_shapes(config, encoder_only),
                      f"{_describe(config)} from {config_path}")
    return config, nest_params(flat, config.scan_layers)


def _check_unexpected(reader: TensorReader, keys: set[str], rows: list[tuple[str, str, str]]) -> None:
    known = {r[0] for r in rows} | set(T5_IGNORED_TENSORS) | {"lm_head.weight"}
    extra = sorted(keys - known)
    if extra:
        raise CheckpointError(
            f"{reader.file_of(extra[0])}: {len(extra)} tensor(s) do not belong to a T5 with this config.json, "
            f"e.g. {extra[:3]}; is the config.json from a different model?"
        )


def _describe(config: T5Config) -> str:
    return (
        f"T5(d_model={config.d_model}, d_kv={config.d_kv}, d_ff={config.d_ff}, heads={config.num_heads}, "
        f"layers={config.num_encoder_layers}+{config.num_decoder_layers}, vocab={config.vocab_size}, "
        f"{config.feed_forward_proj})"
    )


def export_t5(
    config: T5Config,
    params: Mapping,
    out_dir: str | pathlib.Path,
    *,
    encoder_only: bool = False,
    dtype: str = "float32",
) -> pathlib.Path:
    """Writes ``config.json`` + ``model.safetensors`` loadable by ``T5ForConditionalGeneration`` /
    ``T5EncoderModel.from_pretrained(out_dir)``.

    Args:
      config: our config.
      params: params of :class:`T5EncoderDecoder` (or of :class:`T5EncoderModel` with ``encoder_only``),
        scanned or not.
      out_dir: folder (created).
      encoder_only: write only the embedding and encoder (a ``T5EncoderModel`` checkpoint).
      dtype: 'float32', 'float16' or 'bfloat16'.

    Returns:
      ``out_dir`` as a Path.

    Raises:
      CheckpointError: if ``params`` lack a tensor of the table or have a wrong shape.
    """
    tensors = export_table(params, t5_weight_map(config, encoder_only), expected_param_shapes(config, encoder_only),
                           _describe(config))
    return write_hf_folder(out_dir, tensors, t5_config_to_hf(config, encoder_only, dtype), dtype)
