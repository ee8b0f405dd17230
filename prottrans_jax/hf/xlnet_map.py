"""HuggingFace XLNet (``XLNetLMHeadModel`` / ``XLNetModel``) <-> prottrans-jax weight map, import and export.

A table of ``(HF tensor name, our parameter path, transform)``. Our attention weights keep HF's
``[d_model, n_head, d_head]`` layout, so only the feed-forward kernels are transposed. The LM head's
weight is the word embedding (tied): it is written nowhere and, when a file carries it, must equal it.
Nothing here touches tokenizer files (ProtXLNet's SentencePiece vocabulary is separate work).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

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
from prottrans_jax.models.xlnet import XLNetConfig, XLNetLMHeadModel, XLNetModel

# One layer: (HF name inside ``{base}layer.{i}.``, our path inside ``stack/layers_{i}/``, transform).
_LAYER: tuple[Row, ...] = tuple((f"rel_attn.{n}", f"rel_attn/{n}", IDENTITY) for n in (
    "q", "k", "v", "o", "r", "r_r_bias", "r_s_bias", "r_w_bias", "seg_embed")) + (
    ("rel_attn.layer_norm.weight", "rel_attn/layer_norm/scale", IDENTITY),
    ("rel_attn.layer_norm.bias", "rel_attn/layer_norm/bias", IDENTITY),
    ("ff.layer_norm.weight", "ff/layer_norm/scale", IDENTITY),
    ("ff.layer_norm.bias", "ff/layer_norm/bias", IDENTITY),
    ("ff.layer_1.weight", "ff/wi/kernel", TRANSPOSE),  # torch Linear [out, in] <-> kernel [in, out]
    ("ff.layer_1.bias", "ff/wi/bias", IDENTITY),
    ("ff.layer_2.weight", "ff/wo/kernel", TRANSPOSE),
    ("ff.layer_2.bias", "ff/wo/bias", IDENTITY),
)
# ``{base}``: 'transformer.' in an LM-head checkpoint, '' (or 'transformer.') in a bare XLNetModel one.
BASE_ROWS: tuple[Row, ...] = (
    ("{base}word_embedding.weight", "word_embedding/embedding", IDENTITY),
    ("{base}mask_emb", "mask_emb", IDENTITY),
) + tuple((f"{{base}}layer.{{i}}.{hf}", f"stack/layers_{{i}}/{ours}", t) for hf, ours, t in _LAYER)
LM_HEAD_ROWS: tuple[Row, ...] = (("lm_loss.bias", "lm_bias", IDENTITY),)
TIED = ("lm_loss.weight", "{base}word_embedding.weight")  # HF name -> the tensor it must equal

FAMILIES: dict[str, tuple[type, tuple[Row, ...]]] = {
    "XLNetLMHeadModel": (XLNetLMHeadModel, BASE_ROWS + LM_HEAD_ROWS),
    "XLNetModel": (XLNetModel, BASE_ROWS),
}

# HF config.json keys -> our config fields (the same names). Absent keys take XLNetConfig's class
# defaults (save_pretrained writes only values that differ from them).
CONFIG_FIELDS = ("vocab_size", "d_model", "n_layer", "n_head", "d_inner", "ff_activation", "attn_type", "bi_data",
                 "initializer_range", "layer_norm_eps", "dropout", "mem_len", "reuse_len", "clamp_len", "same_length",
                 "pad_token_id")
HF_DEFAULTS: dict[str, Any] = dict(
    vocab_size=32000, d_model=1024, n_layer=24, n_head=16, d_inner=4096, ff_activation="gelu", attn_type="bi",
    bi_data=False, initializer_range=0.02, layer_norm_eps=1e-12, dropout=0.1, mem_len=512, reuse_len=None,
    clamp_len=-1, same_length=False, pad_token_id=5,
)


# ---------------------------------------------------------------------------------------
# Configs.
# ---------------------------------------------------------------------------------------
def config_from_hf(hf_config: Mapping[str, Any], source: str = "config.json", **overrides: Any) -> XLNetConfig:
    """Our config from a HF XLNet ``config.json`` dict (HF's defaults for absent keys).

    Raises:
      CheckpointError: another model type, ``bi_data``, a ``d_head`` other than ``d_model / n_head``
        or otherwise unusable values, naming ``source``.
    """
    if hf_config.get("model_type", "xlnet") != "xlnet":
        raise CheckpointError(f"{source}: model_type {hf_config.get('model_type')!r} is not an XLNet checkpoint "
                              "(expected model_type 'xlnet')")
    values = {**HF_DEFAULTS, **{k: v for k, v in hf_config.items() if k in CONFIG_FIELDS}}
    if "vocab_size" not in hf_config and "n_token" in hf_config:  # configs written before transformers 2.x
        values["vocab_size"] = hf_config["n_token"]
    d_head = hf_config.get("d_head")
    if d_head is not None and values["n_head"] and d_head * values["n_head"] != values["d_model"]:
        raise CheckpointError(f"{source}: d_head {d_head} x n_head {values['n_head']} != d_model {values['d_model']}; "
                              "XLNet needs d_head = d_model / n_head")
    try:
        return XLNetConfig(**{**values, **overrides})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: not a usable XLNet config ({e})") from e


def config_to_hf(family: str, config: XLNetConfig, dtype: str = "float32") -> dict[str, Any]:
    """A HF ``config.json`` dict for ``family`` (every field written, LM head tied to the embedding)."""
    hf = {key: getattr(config, key) for key in CONFIG_FIELDS}
    hf.update(d_head=config.d_head, architectures=[family], model_type="xlnet", tie_word_embeddings=True,
              dtype=dtype)
    return hf


# ---------------------------------------------------------------------------------------
# Tables expanded for one config.
# ---------------------------------------------------------------------------------------
MAP = PrefixedFamilies("XLNet", "XLNetLMHeadModel", "XLNetModel", FAMILIES)
weight_map = MAP.rows  # (family, config, base=None) -> expanded rows
expected_param_shapes = MAP.expected_shapes  # (family, config) -> our flat shapes
resolve_family = MAP.resolve  # (hf_config, family=None) -> 'XLNetLMHeadModel' or 'XLNetModel'


def _describe(family: str, config: XLNetConfig) -> str:
    return (f"{family}(d_model={config.d_model}, n_layer={config.n_layer}, n_head={config.n_head}, "
            f"d_inner={config.d_inner}, vocab={config.vocab_size})")


# ---------------------------------------------------------------------------------------
# Import.
# ---------------------------------------------------------------------------------------
def _check_rest(reader: TensorReader, family: str, base: str, rows: list[Row], flat: Mapping, tie: bool,
                context: str) -> None:
    """The tied head equals the embedding; a bare model ignores other heads; nothing else is left over."""
    tied, source = TIED[0], TIED[1].replace("{base}", base)
    if family == "XLNetLMHeadModel":
        check_tied_copy(reader, tied, tied if tied in reader.keys() else None, source,
                        flat["word_embedding/embedding"], tie, context)
    MAP.refuse_unknown(reader, family, base, {r[0] for r in rows} | {tied}, context)


def import_hf(hf_dir: str | pathlib.Path, family: str | None = None, **overrides: Any):
    """Reads a HF XLNet folder (config.json + model.safetensors / sharded / pytorch_model.bin).

    Args:
      hf_dir: the folder.
      family: 'XLNetLMHeadModel', 'XLNetModel' (the backbone of any XLNet checkpoint, heads ignored),
        or None: the LM head when the file declares one, else the backbone.
      **overrides: our config fields to set (e.g. ``scan_layers=True``: params come back stacked).

    Returns:
      ``(family, config, params)``: ``FAMILIES[family][0]`` is our module; params are float32 numpy.

    Raises:
      CheckpointError: not XLNet, missing/unexpected tensor or wrong shape (naming file and tensor).
    """
    config_path, hf_config = read_config_json(hf_dir)
    source = str(config_path)
    family = resolve_family(hf_config, family)
    config = config_from_hf(hf_config, source)  # refuse bad configs before reading weights
    reader = TensorReader(hf_dir)
    base = MAP.base_of(reader, family)
    rows = weight_map(family, config, base)
    context = f"{_describe(family, config)} from {config_path}"
    flat = read_table(reader, rows, expected_param_shapes(family, config), context)
    _check_rest(reader, family, base, rows, flat, hf_config.get("tie_word_embeddings", True) is not False, context)
    config = config.replace(**overrides) if overrides else config
    return family, config, nest_params(flat, config.scan_layers)


# ---------------------------------------------------------------------------------------
# Export.
# ---------------------------------------------------------------------------------------
def export_hf(family: str, config: XLNetConfig, params: Mapping, out_dir: str | pathlib.Path,
              dtype: str = "float32") -> pathlib.Path:
    """Writes ``config.json`` + ``model.safetensors`` that ``transformers.<family>.from_pretrained`` loads.

    Args:
      family: 'XLNetLMHeadModel' or 'XLNetModel'.
      config: our config.
      params: the module's params, scanned or not (numpy or jax arrays, sharded or not).
      out_dir: folder (created).
      dtype: 'float32', 'float16' or 'bfloat16' for the weights.

    Returns:
      ``out_dir`` as a Path.

    Raises:
      CheckpointError: a parameter is missing or has the wrong shape.
      ValueError: unknown family.
    """
    tensors = export_table(params, weight_map(family, config), expected_param_shapes(family, config),
                           _describe(family, config))
    return write_hf_folder(out_dir, tensors, config_to_hf(family, config, dtype), dtype)
