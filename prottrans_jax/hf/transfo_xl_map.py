"""HuggingFace Transformer-XL (``TransfoXLLMHeadModel`` / ``TransfoXLModel``, transformers <= 4.35) weight map.

transformers 5 has no TransfoXL; the layout is 4.35's. Our network is its special case ``cutoffs=[]``,
``div_val=1``, ``d_embed=d_model``, ``attn_type=0``, ``pre_lnorm=False``: the adaptive embedding is one
table (scaled by sqrt(d_model)) and the adaptive softmax one cluster, ``log_softmax(h W^T + b)`` with
``W`` tied to that table and ``b`` (``crit.out_layers.0.bias``) our ``lm_bias``, so HF's
``prediction_scores`` are the log-softmax of our logits. With ``untie_r`` false one
``r_w_bias``/``r_r_bias`` pair lives at the top (torch also lists it under every layer: those copies must
equal it). The positional ``inv_freq`` buffer is derived from ``d_model``: written, and checked on import.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from prottrans_jax import alphabet
from prottrans_jax.hf.common import (
    IDENTITY,
    TRANSPOSE,
    CheckpointError,
    PrefixedFamilies,
    Row,
    TensorReader,
    check_tied_copy,
    export_table,
    nest_params,
    read_config_json,
    read_table,
    write_hf_folder,
)
from prottrans_jax.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel, TransfoXLModel

MODEL_TYPE = "transfo-xl"
# One layer: (HF name inside ``{base}layers.{i}.``, our path inside ``stack/layers_{i}/``, transform).
_LAYER: tuple[Row, ...] = (
    ("dec_attn.qkv_net.weight", "attention/qkv/kernel", TRANSPOSE),  # [3 * heads * kv, embed]: q, k, v
    ("dec_attn.r_net.weight", "attention/pos/kernel", TRANSPOSE),
    ("dec_attn.o_net.weight", "attention/out/kernel", TRANSPOSE),
    ("dec_attn.layer_norm.weight", "attention/layer_norm/scale", IDENTITY),
    ("dec_attn.layer_norm.bias", "attention/layer_norm/bias", IDENTITY),
    ("dec_attn.r_w_bias", "attention/r_w_bias", IDENTITY),  # untie_r only (rows absent from ours are dropped)
    ("dec_attn.r_r_bias", "attention/r_r_bias", IDENTITY),
    ("pos_ff.CoreNet.0.weight", "ff/wi/kernel", TRANSPOSE),
    ("pos_ff.CoreNet.0.bias", "ff/wi/bias", IDENTITY),
    ("pos_ff.CoreNet.3.weight", "ff/wo/kernel", TRANSPOSE),
    ("pos_ff.CoreNet.3.bias", "ff/wo/bias", IDENTITY),
    ("pos_ff.layer_norm.weight", "ff/layer_norm/scale", IDENTITY),
    ("pos_ff.layer_norm.bias", "ff/layer_norm/bias", IDENTITY),
)
BASE_ROWS: tuple[Row, ...] = (
    ("{base}word_emb.emb_layers.0.weight", "word_embeddings/embedding", IDENTITY),
    ("{base}r_w_bias", "r_w_bias", IDENTITY),  # untie_r false: one pair for all layers
    ("{base}r_r_bias", "r_r_bias", IDENTITY),
) + tuple((f"{{base}}layers.{{i}}.{hf}", f"stack/layers_{{i}}/{ours}", t) for hf, ours, t in _LAYER)
LM_HEAD_ROWS: tuple[Row, ...] = (("crit.out_layers.0.bias", "lm_bias", IDENTITY),)
TIED_HEAD = ("crit.out_layers.0.weight", "{base}word_emb.emb_layers.0.weight")  # HF name -> the tensor it equals
INV_FREQ = "{base}pos_emb.inv_freq"  # a buffer: 1 / 10000^(2k / d_model)

FAMILIES: dict[str, tuple[type, tuple[Row, ...]]] = {
    "TransfoXLLMHeadModel": (TransfoXLLMHeadModel, BASE_ROWS + LM_HEAD_ROWS),
    "TransfoXLModel": (TransfoXLModel, BASE_ROWS),
}

# HF config.json key -> our field. Absent keys take transformers 4.35's TransfoXLConfig defaults.
CONFIG_FIELDS = (("vocab_size", "vocab_size"), ("d_model", "d_model"), ("n_layer", "n_layer"), ("n_head", "n_head"),
                 ("d_head", "d_head"), ("d_inner", "d_inner"), ("dropout", "dropout"), ("dropatt", "dropatt"),
                 ("mem_len", "mem_len"), ("clamp_len", "clamp_len"), ("same_length", "same_length"),
                 ("untie_r", "untie_r"), ("layer_norm_epsilon", "layer_norm_epsilon"),
                 ("init_std", "initializer_range"))
HF_DEFAULTS: dict[str, Any] = dict(
    vocab_size=267735, cutoffs=[20000, 40000, 200000], d_model=1024, d_embed=1024, n_head=16, d_head=64,
    d_inner=4096, div_val=4, pre_lnorm=False, n_layer=18, mem_len=1600, clamp_len=1000, same_length=True,
    attn_type=0, sample_softmax=-1, dropout=0.1, dropatt=0.0, untie_r=True, init_std=0.02, layer_norm_epsilon=1e-5,
)
# What our network is, in HF's settings: (key, required value, why another value is refused).
_REQUIRED = (
    ("cutoffs", [], "an adaptive softmax with clusters; ours is one plain softmax (cutoffs [])"),
    ("div_val", 1, "adaptive embedding widths; ours is one table (div_val 1)"),
    ("pre_lnorm", False, "pre-LayerNorm layers; ours are post-LN"),
    ("attn_type", 0, "another attention; ours is relative partial learnable (attn_type 0)"),
)


# ---------------------------------------------------------------------------------------
# Configs.
# ---------------------------------------------------------------------------------------
def config_from_hf(hf_config: Mapping[str, Any], source: str = "config.json", **overrides: Any) -> TransfoXLConfig:
    """Our config from a HF ``TransfoXLConfig`` dict (4.35's defaults for absent keys).

    Raises:
      CheckpointError: another model type, adaptive clusters or widths, pre-LN, another attention,
        sampled softmax, ``d_embed != d_model`` or otherwise unusable values, naming ``source``.
    """
    if hf_config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{source}: model_type {hf_config.get('model_type')!r} is not a Transformer-XL "
                              f"checkpoint (expected model_type {MODEL_TYPE!r})")
    values = {**HF_DEFAULTS, **hf_config}
    for key, required, what in _REQUIRED:
        if values[key] != required:
            raise CheckpointError(f"{source}: {key} {values[key]!r} means {what}; not supported")
    if values["d_embed"] != values["d_model"]:
        raise CheckpointError(f"{source}: d_embed {values['d_embed']} != d_model {values['d_model']} needs embedding "
                              "projections; ours has none (d_embed = d_model)")
    if (values["sample_softmax"] or -1) > 0:
        raise CheckpointError(f"{source}: sample_softmax {values['sample_softmax']} is not supported (plain softmax)")
    fields = {ours: values[hf] for hf, ours in CONFIG_FIELDS}
    fields["pad_token_id"] = hf_config.get("pad_token_id") or 0
    try:
        return TransfoXLConfig(**{**fields, **overrides})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: not a usable Transformer-XL config ({e})") from e


def config_to_hf(family: str, config: TransfoXLConfig, dtype: str = "float32") -> dict[str, Any]:
    """A 4.35 ``config.json`` dict: one plain softmax tied to the one embedding table, nothing projected.

    ``eos_token_id`` is ProtBert's [SEP] (ProtTXL's proteins are ``[CLS] residues [SEP]``) when the
    vocabulary is ProtBert's size, else 4.35's default 0.
    """
    hf = {key: getattr(config, ours) for key, ours in CONFIG_FIELDS}
    prot_bert = config.vocab_size == alphabet.PROT_BERT_VOCAB_SIZE
    hf.update(
        architectures=[family], model_type=MODEL_TYPE, d_embed=config.d_model, cutoffs=[], div_val=1,
        tie_projs=[False], proj_share_all_but_first=False, pre_lnorm=False, attn_type=0, sample_softmax=-1,
        adaptive=True, init="normal", init_range=config.initializer_range, proj_init_std=config.initializer_range,
        tie_word_embeddings=True, pad_token_id=config.pad_token_id,
        eos_token_id=alphabet.PROT_BERT_SEP_ID if prot_bert else 0,
        torch_dtype=dtype,  # 4.35's name for it
    )
    return hf


# ---------------------------------------------------------------------------------------
# Tables expanded for one config.
# ---------------------------------------------------------------------------------------
MAP = PrefixedFamilies("Transformer-XL", "TransfoXLLMHeadModel", "TransfoXLModel", FAMILIES)
weight_map = MAP.rows  # (family, config, base=None) -> expanded rows whose parameter the config has (untie_r)
expected_param_shapes = MAP.expected_shapes  # (family, config) -> our flat shapes
resolve_family = MAP.resolve  # (hf_config, family=None) -> 'TransfoXLLMHeadModel' or 'TransfoXLModel'


def inv_freq(d_model: int) -> np.ndarray:
    """The ``pos_emb.inv_freq`` buffer ``[d_model / 2]``, in float32 as HF's ``PositionalEmbedding`` (torch's
    ``pow`` may differ from numpy's in the last bit: the buffer is derived, not trained)."""
    exponent = np.arange(0, d_model, 2, dtype=np.float32) / np.float32(d_model)
    return np.float32(1) / np.float32(10000) ** exponent


def _describe(family: str, config: TransfoXLConfig) -> str:
    return (f"{family}(d_model={config.d_model}, n_layer={config.n_layer}, n_head={config.n_head}, "
            f"d_head={config.d_head}, d_inner={config.d_inner}, vocab={config.vocab_size}, untie_r={config.untie_r})")


# ---------------------------------------------------------------------------------------
# Import.
# ---------------------------------------------------------------------------------------
def _check_copies(reader: TensorReader, family: str, base: str, config: TransfoXLConfig, flat: Mapping,
                  tie: bool, context: str) -> set[str]:
    """Tied head, shared biases listed per layer, ``inv_freq``: each must equal what it copies. Returns their names."""
    names = set(reader.keys())
    copies = {}
    if family == "TransfoXLLMHeadModel":
        copies[TIED_HEAD[0]] = (TIED_HEAD[1].replace("{base}", base), flat["word_embeddings/embedding"], tie)
    if not config.untie_r:
        for i in range(config.n_layer):
            for b in ("r_w_bias", "r_r_bias"):
                copies[f"{base}layers.{i}.dec_attn.{b}"] = (f"{base}{b}", flat[b], True)
    for name, (source, value, declared) in copies.items():
        check_tied_copy(reader, name, name if name in names else None, source, value, declared, context)
    freq = INV_FREQ.replace("{base}", base)
    if freq in names:
        want = inv_freq(config.d_model)
        found = reader.get(freq)
        if found.shape != want.shape or not np.allclose(found, want, rtol=1e-2, atol=0):  # bf16 files round it
            raise CheckpointError(f"{reader.file_of(freq)}: tensor {freq!r} is not the sinusoid frequencies of "
                                  f"d_model {config.d_model} ({context})")
    return set(copies) | {freq}


def import_hf(hf_dir: str | pathlib.Path, family: str | None = None, **overrides: Any):
    """Reads a HF Transformer-XL folder (config.json + model.safetensors / sharded / pytorch_model.bin).

    Args:
      hf_dir: the folder (as 4.35's ``save_pretrained`` or :func:`export_hf` writes it).
      family: 'TransfoXLLMHeadModel', 'TransfoXLModel' (the backbone, head ignored), or None: the LM
        head when the file declares one, else the backbone.
      **overrides: our config fields to set (e.g. ``scan_layers=True``: params come back stacked).

    Returns:
      ``(family, config, params)``: ``FAMILIES[family][0]`` is our module; params are float32 numpy.

    Raises:
      CheckpointError: not Transformer-XL, a layout ours is not (adaptive softmax...), missing/unexpected
        tensor, wrong shape or an untied head (naming file and tensor).
    """
    config_path, hf_config = read_config_json(hf_dir)
    family = resolve_family(hf_config, family)
    config = config_from_hf(hf_config, str(config_path))  # refuse bad configs before reading weights
    reader = TensorReader(hf_dir)
    base = MAP.base_of(reader, family)
    rows = weight_map(family, config, base)
    context = f"{_describe(family, config)} from {config_path}"
    flat = read_table(reader, rows, expected_param_shapes(family, config), context)
    tie = hf_config.get("tie_word_embeddings", True) is not False
    known = {r[0] for r in rows} | _check_copies(reader, family, base, config, flat, tie, context)
    MAP.refuse_unknown(reader, family, base, known, context)
    config = config.replace(**overrides) if overrides else config
    return family, config, nest_params(flat, config.scan_layers)


# ---------------------------------------------------------------------------------------
# Export.
# ---------------------------------------------------------------------------------------
def export_hf(family: str, config: TransfoXLConfig, params: Mapping, out_dir: str | pathlib.Path,
              dtype: str = "float32") -> pathlib.Path:
    """Writes ``config.json`` + ``model.safetensors`` that 4.35's ``transformers.<family>.from_pretrained`` loads.

    ``family`` is 'TransfoXLLMHeadModel' or 'TransfoXLModel'; ``params`` scanned or not; ``dtype`` of the
    weights 'float32', 'float16' or 'bfloat16'. Returns ``out_dir``; raises ``CheckpointError`` for a missing
    or misshapen parameter and ``ValueError`` for an unknown family.
    """
    tensors = export_table(params, weight_map(family, config), expected_param_shapes(family, config),
                           _describe(family, config))
    freq = INV_FREQ.replace("{base}", MAP.default_base(family))
    tensors[freq] = inv_freq(config.d_model)  # float32 whatever ``dtype``: rounded, far positions would drift
    return write_hf_folder(out_dir, tensors, config_to_hf(family, config, dtype), dtype, keep_float32=[freq])
