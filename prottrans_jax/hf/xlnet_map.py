"""HuggingFace XLNet (``XLNetLMHeadModel`` / ``XLNetModel``) <-> prottrans-jax weight map, import and export.

A table of ``(HF tensor name, our parameter path, transform)``. Our attention weights keep HF's
``[d_model, n_head, d_head]`` layout, so only the feed-forward kernels are transposed. The LM head's
weight is the word embedding (tied): it is written nowhere and, when a file carries it, must equal it.
Nothing here touches tokenizer files (ProtXLNet's SentencePiece vocabulary is separate work).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax.core import unfreeze

from prottrans_jax.hf.common import (
    IDENTITY,
    SAFETENSORS,
    TRANSPOSE,
    CheckpointError,
    TensorReader,
    apply_transform,
    expand_rows,
    flatten_params,
    read_config_json,
    save_safetensors,
    transformed_shape,
    unflatten_params,
)
from prottrans_jax.models import layers
from prottrans_jax.models.xlnet import XLNetConfig, XLNetLMHeadModel, XLNetModel

Row = tuple[str, str, str]

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
def _family(family: str) -> tuple[type, tuple[Row, ...]]:
    if family not in FAMILIES:
        raise ValueError(f"unknown XLNet family {family!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def weight_map(family: str, config: XLNetConfig, base: str | None = None) -> list[Row]:
    """The expanded rows ``[(hf_name, our_path, transform), ...]`` (unscanned paths).

    Args:
      family: 'XLNetLMHeadModel' or 'XLNetModel'.
      config: our config (its layer count).
      base: backbone prefix; default 'transformer.' for the LM head and '' for the bare model.
    """
    _, rows = _family(family)
    base = ("transformer." if family == "XLNetLMHeadModel" else "") if base is None else base
    return expand_rows(((hf.replace("{base}", base), ours, t) for hf, ours, t in rows), config.n_layer)


def expected_param_shapes(family: str, config: XLNetConfig) -> dict[str, tuple[int, ...]]:
    """Our flat parameter shapes (unscanned) for ``family``, computed abstractly from the module."""
    module = _family(family)[0](config.replace(scan_layers=False, remat_policy="none"))
    shapes = jax.eval_shape(lambda rng: module.init(rng, **module.dummy_inputs()), jax.random.key(0))
    return {k: tuple(v.shape) for k, v in flatten_params(unfreeze(shapes["params"])).items()}


def _describe(family: str, config: XLNetConfig) -> str:
    return (f"{family}(d_model={config.d_model}, n_layer={config.n_layer}, n_head={config.n_head}, "
            f"d_inner={config.d_inner}, vocab={config.vocab_size})")


# ---------------------------------------------------------------------------------------
# Import.
# ---------------------------------------------------------------------------------------
def resolve_family(hf_config: Mapping[str, Any], family: str | None = None) -> str:
    """'XLNetLMHeadModel' when asked or declared, else 'XLNetModel' (other heads' backbones).

    Raises:
      ValueError: ``family`` is not one of ours.
    """
    if family is not None:
        _family(family)
        return family
    declared = (hf_config.get("architectures") or [None])[0]
    return "XLNetLMHeadModel" if declared == "XLNetLMHeadModel" else "XLNetModel"


def _read_rows(reader: TensorReader, rows: list[Row], expected: Mapping[str, tuple[int, ...]],
               context: str) -> dict[str, np.ndarray]:
    """Our flat params from the table, each HF tensor's shape checked before it is read."""
    names = set(reader.keys())
    flat = {}
    for hf_name, our_path, transform in rows:
        want = transformed_shape(expected[our_path], transform)
        if hf_name not in names:
            raise CheckpointError(f"{reader.file_of(hf_name)}: tensor {hf_name!r} is missing "
                                  f"(expected shape {want} for {context})")
        if reader.shape(hf_name) != want:
            raise CheckpointError(f"{reader.file_of(hf_name)}: tensor {hf_name!r} has shape {reader.shape(hf_name)}, "
                                  f"expected {want} for {context}")
        flat[our_path] = apply_transform(reader.get(hf_name), transform)
    return flat


def _check_rest(reader: TensorReader, family: str, base: str, rows: list[Row], flat: Mapping[str, np.ndarray],
                context: str) -> None:
    """The tied head equals the embedding; a bare model ignores other heads; nothing else is left over."""
    names = set(reader.keys())
    tied, source = TIED[0], TIED[1].replace("{base}", base)
    if family == "XLNetLMHeadModel" and tied in names:
        value = reader.get(tied)
        if value.shape != flat["word_embedding/embedding"].shape or not np.allclose(
                value, flat["word_embedding/embedding"], rtol=0, atol=1e-6):
            raise CheckpointError(f"{reader.file_of(tied)}: tensor {tied!r} differs from {source!r}; untied output "
                                  f"layers are not supported ({context})")
    known = {r[0] for r in rows} | {tied}
    extra = sorted(n for n in names - known if family == "XLNetLMHeadModel" or n.startswith(base))
    if extra:
        raise CheckpointError(f"{reader.file_of(extra[0])}: {len(extra)} tensor(s) do not belong to {context}, e.g. "
                              f"{extra[:3]}; is the config.json from a different model?")


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
    base = "transformer." if any(n.startswith("transformer.") for n in reader.keys()) else ""
    if family == "XLNetLMHeadModel" and not base:
        raise CheckpointError(f"{reader.file_of(TIED[0])}: no 'transformer.*' tensors, so no XLNetLMHeadModel; "
                              "import it with family 'XLNetModel'")
    rows = weight_map(family, config, base)
    context = f"{_describe(family, config)} from {config_path}"
    flat = _read_rows(reader, rows, expected_param_shapes(family, config), context)
    _check_rest(reader, family, base, rows, flat, context)
    config = config.replace(**overrides) if overrides else config
    params = unflatten_params(flat)
    if config.scan_layers:
        params = layers.stack_layer_params(params)
    return family, config, params


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
    _family(family)
    flat = flatten_params(layers.unstack_layer_params(unfreeze(params)))
    expected = expected_param_shapes(family, config)
    tensors = {}
    for hf_name, our_path, transform in weight_map(family, config):
        if our_path not in flat:
            raise CheckpointError(f"params: {our_path!r} is missing (needed for {hf_name!r}, "
                                  f"{_describe(family, config)})")
        value = np.asarray(jax.device_get(flat[our_path]), np.float32)
        if value.shape != expected[our_path]:
            raise CheckpointError(f"params: {our_path!r} has shape {value.shape}, expected {expected[our_path]} for "
                                  f"{_describe(family, config)}")
        tensors[hf_name] = apply_transform(value, transform)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(tensors, out / SAFETENSORS, dtype)
    (out / "config.json").write_text(json.dumps(config_to_hf(family, config, dtype), indent=2, sort_keys=True) + "\n")
    return out
