"""HuggingFace BERT/ALBERT/ELECTRA <-> prottrans-jax weight maps (tables), ``import_hf`` and ``export_hf``."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax.core import unfreeze

from prottrans_jax import alphabet
from prottrans_jax.hf.common import (
    IDENTITY,
    TRANSPOSE,
    CheckpointError,
    Row,
    TensorReader,
    apply_transform,
    check_tied_copy,
    expand_rows,
    export_table,
    module_param_shapes,
    nest_params,
    read_config_json,
    read_table,
    refuse_leftovers,
    write_hf_folder,
)
from prottrans_jax.hf.tokenizer_files import write_prot_bert_tokenizer  # noqa: F401  (re-exported)
from prottrans_jax.models.albert import AlbertConfig, AlbertForMaskedLM, AlbertModel
from prottrans_jax.models.bert import BertConfig, BertForMaskedLM, BertModel
from prottrans_jax.models.electra import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining, ElectraModel

# ---------------------------------------------------------------------------------------
# The tables: (HF tensor name, our parameter path, transform). `{base}` is the backbone prefix
# ('bert.', 'albert.', 'electra.' or '' for a bare *Model checkpoint), `{i}` the layer index.
# torch Linear.weight is [out, in], our kernels [in, out]: TRANSPOSE. Rows whose parameter the
# config does not have (embeddings_project when embedding_size == hidden_size) are skipped.
# ---------------------------------------------------------------------------------------
EMBEDDING_ROWS: tuple[Row, ...] = (
    ("{base}embeddings.word_embeddings.weight", "embeddings/word_embeddings/embedding", IDENTITY),
    ("{base}embeddings.position_embeddings.weight", "embeddings/position_embeddings/embedding", IDENTITY),
    ("{base}embeddings.token_type_embeddings.weight", "embeddings/token_type_embeddings/embedding", IDENTITY),
    ("{base}embeddings.LayerNorm.weight", "embeddings/layer_norm/scale", IDENTITY),
    ("{base}embeddings.LayerNorm.bias", "embeddings/layer_norm/bias", IDENTITY),
)
# One transformer layer: (HF name inside the layer, our path inside the layer, transform).
_BERT_LAYER: tuple[Row, ...] = (
    ("attention.self.query.weight", "attention/query/kernel", TRANSPOSE),
    ("attention.self.query.bias", "attention/query/bias", IDENTITY),
    ("attention.self.key.weight", "attention/key/kernel", TRANSPOSE),
    ("attention.self.key.bias", "attention/key/bias", IDENTITY),
    ("attention.self.value.weight", "attention/value/kernel", TRANSPOSE),
    ("attention.self.value.bias", "attention/value/bias", IDENTITY),
    ("attention.output.dense.weight", "attention/out/kernel", TRANSPOSE),
    ("attention.output.dense.bias", "attention/out/bias", IDENTITY),
    ("attention.output.LayerNorm.weight", "attention_layer_norm/scale", IDENTITY),
    ("attention.output.LayerNorm.bias", "attention_layer_norm/bias", IDENTITY),
    ("intermediate.dense.weight", "mlp/wi/kernel", TRANSPOSE),
    ("intermediate.dense.bias", "mlp/wi/bias", IDENTITY),
    ("output.dense.weight", "mlp/wo/kernel", TRANSPOSE),
    ("output.dense.bias", "mlp/wo/bias", IDENTITY),
    ("output.LayerNorm.weight", "mlp_layer_norm/scale", IDENTITY),
    ("output.LayerNorm.bias", "mlp_layer_norm/bias", IDENTITY),
)
_ALBERT_LAYER: tuple[Row, ...] = (
    ("attention.query.weight", "attention/query/kernel", TRANSPOSE),
    ("attention.query.bias", "attention/query/bias", IDENTITY),
    ("attention.key.weight", "attention/key/kernel", TRANSPOSE),
    ("attention.key.bias", "attention/key/bias", IDENTITY),
    ("attention.value.weight", "attention/value/kernel", TRANSPOSE),
    ("attention.value.bias", "attention/value/bias", IDENTITY),
    ("attention.dense.weight", "attention/out/kernel", TRANSPOSE),
    ("attention.dense.bias", "attention/out/bias", IDENTITY),
    ("attention.LayerNorm.weight", "attention_layer_norm/scale", IDENTITY),
    ("attention.LayerNorm.bias", "attention_layer_norm/bias", IDENTITY),
    ("ffn.weight", "mlp/wi/kernel", TRANSPOSE),
    ("ffn.bias", "mlp/wi/bias", IDENTITY),
    ("ffn_output.weight", "mlp/wo/kernel", TRANSPOSE),
    ("ffn_output.bias", "mlp/wo/bias", IDENTITY),
    ("full_layer_layer_norm.weight", "mlp_layer_norm/scale", IDENTITY),
    ("full_layer_layer_norm.bias", "mlp_layer_norm/bias", IDENTITY),
)
BERT_ENCODER_ROWS = tuple(
    (f"{{base}}encoder.layer.{{i}}.{hf}", f"encoder/layers_{{i}}/{ours}", t) for hf, ours, t in _BERT_LAYER
)
ALBERT_ENCODER_ROWS = (
    ("{base}encoder.embedding_hidden_mapping_in.weight", "embeddings_project/kernel", TRANSPOSE),
    ("{base}encoder.embedding_hidden_mapping_in.bias", "embeddings_project/bias", IDENTITY),
) + tuple(
    (f"{{base}}encoder.albert_layer_groups.0.albert_layers.0.{hf}", f"encoder/shared_layer/{ours}", t)
    for hf, ours, t in _ALBERT_LAYER
)
ELECTRA_ENCODER_ROWS = (
    ("{base}embeddings_project.weight", "embeddings_project/kernel", TRANSPOSE),
    ("{base}embeddings_project.bias", "embeddings_project/bias", IDENTITY),
) + BERT_ENCODER_ROWS
BERT_MLM_ROWS: tuple[Row, ...] = (
    ("cls.predictions.transform.dense.weight", "predictions/dense/kernel", TRANSPOSE),
    ("cls.predictions.transform.dense.bias", "predictions/dense/bias", IDENTITY),
    ("cls.predictions.transform.LayerNorm.weight", "predictions/layer_norm/scale", IDENTITY),
    ("cls.predictions.transform.LayerNorm.bias", "predictions/layer_norm/bias", IDENTITY),
    ("cls.predictions.bias", "predictions/output_bias", IDENTITY),
)
ALBERT_MLM_ROWS: tuple[Row, ...] = (
    ("predictions.dense.weight", "predictions/dense/kernel", TRANSPOSE),
    ("predictions.dense.bias", "predictions/dense/bias", IDENTITY),
    ("predictions.LayerNorm.weight", "predictions/layer_norm/scale", IDENTITY),
    ("predictions.LayerNorm.bias", "predictions/layer_norm/bias", IDENTITY),
    ("predictions.bias", "predictions/output_bias", IDENTITY),
)
ELECTRA_DISCRIMINATOR_ROWS: tuple[Row, ...] = (
    ("discriminator_predictions.dense.weight", "discriminator_predictions/dense/kernel", TRANSPOSE),
    ("discriminator_predictions.dense.bias", "discriminator_predictions/dense/bias", IDENTITY),
    ("discriminator_predictions.dense_prediction.weight", "discriminator_predictions/dense_prediction/kernel",
     TRANSPOSE),
    ("discriminator_predictions.dense_prediction.bias", "discriminator_predictions/dense_prediction/bias", IDENTITY),
)
ELECTRA_GENERATOR_ROWS: tuple[Row, ...] = (
    ("generator_predictions.dense.weight", "generator_predictions/dense/kernel", TRANSPOSE),
    ("generator_predictions.dense.bias", "generator_predictions/dense/bias", IDENTITY),
    ("generator_predictions.LayerNorm.weight", "generator_predictions/layer_norm/scale", IDENTITY),
    ("generator_predictions.LayerNorm.bias", "generator_predictions/layer_norm/bias", IDENTITY),
    ("generator_lm_head.bias", "generator_predictions/output_bias", IDENTITY),
)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One HF architecture we read and write.

    Attributes:
      name: HF class name (also our family name and, except ELECTRA's, our module's name).
      model_type: HF ``model_type``.
      module: our Linen module class.
      config_cls: our config class.
      rows: the weight-map table (``{base}`` and ``{i}`` unexpanded).
      tied: HF tensors that are copies of ours (decoder tied to the word embeddings): name -> source name.
      ignored: HF name prefixes/suffixes carrying nothing of ours (poolers, NSP/SOP heads, buffers).
    """

    name: str
    model_type: str
    module: type
    config_cls: type
    rows: tuple[Row, ...]
    tied: tuple[tuple[str, str], ...] = ()
    ignored: tuple[str, ...] = ()

    @property
    def is_base(self) -> bool:
        """A bare encoder (``*Model``): its tensors may or may not carry the ``{model_type}.`` prefix."""
        return self.name.endswith("Model")


_POOLER = ("{base}pooler.", "{base}embeddings.position_ids")
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("BertModel", "bert", BertModel, BertConfig, EMBEDDING_ROWS + BERT_ENCODER_ROWS, (), _POOLER),
        Architecture(
            "BertForMaskedLM", "bert", BertForMaskedLM, BertConfig, EMBEDDING_ROWS + BERT_ENCODER_ROWS + BERT_MLM_ROWS,
            tied=(("cls.predictions.decoder.weight", "{base}embeddings.word_embeddings.weight"),
                  ("cls.predictions.decoder.bias", "cls.predictions.bias")),
            ignored=_POOLER + ("cls.seq_relationship.",),
        ),
        Architecture("AlbertModel", "albert", AlbertModel, AlbertConfig, EMBEDDING_ROWS + ALBERT_ENCODER_ROWS, (),
                     _POOLER),
        Architecture(
            "AlbertForMaskedLM", "albert", AlbertForMaskedLM, AlbertConfig,
            EMBEDDING_ROWS + ALBERT_ENCODER_ROWS + ALBERT_MLM_ROWS,
            tied=(("predictions.decoder.weight", "{base}embeddings.word_embeddings.weight"),
                  ("predictions.decoder.bias", "predictions.bias")),
            ignored=_POOLER + ("sop_classifier.",),
        ),
        Architecture("ElectraModel", "electra", ElectraModel, ElectraConfig, EMBEDDING_ROWS + ELECTRA_ENCODER_ROWS,
                     (), _POOLER),
        Architecture(
            "ElectraForPreTraining", "electra", ElectraForPreTraining, ElectraConfig,
            EMBEDDING_ROWS + ELECTRA_ENCODER_ROWS + ELECTRA_DISCRIMINATOR_ROWS, (), _POOLER,
        ),
        Architecture(
            "ElectraForMaskedLM", "electra", ElectraForMaskedLM, ElectraConfig,
            EMBEDDING_ROWS + ELECTRA_ENCODER_ROWS + ELECTRA_GENERATOR_ROWS,
            tied=(("generator_lm_head.weight", "{base}embeddings.word_embeddings.weight"),), ignored=_POOLER,
        ),
    )
}
# HF architectures read as one of ours (their extra heads are ignored).
ARCHITECTURE_ALIASES = {"BertForPreTraining": "BertForMaskedLM", "AlbertForPreTraining": "AlbertForMaskedLM"}
BASE_ARCHITECTURE = {"bert": "BertModel", "albert": "AlbertModel", "electra": "ElectraModel"}

# HF config.json keys -> our config fields. Keys absent from a config.json take HF's class defaults
# (save_pretrained writes only the values that differ from them).
CONFIG_FIELDS = (
    ("vocab_size", "vocab_size"),
    ("hidden_size", "hidden_size"),
    ("num_hidden_layers", "num_layers"),
    ("num_attention_heads", "num_heads"),
    ("intermediate_size", "intermediate_size"),
    ("hidden_act", "hidden_act"),
    ("hidden_dropout_prob", "hidden_dropout_rate"),
    ("attention_probs_dropout_prob", "attention_dropout_rate"),
    ("max_position_embeddings", "max_position_embeddings"),
    ("type_vocab_size", "type_vocab_size"),
    ("initializer_range", "initializer_range"),
    ("layer_norm_eps", "layer_norm_eps"),
    ("pad_token_id", "pad_token_id"),
)
EXTRA_CONFIG_FIELDS = {
    "bert": (),
    "albert": (("embedding_size", "embedding_size"), ("num_hidden_groups", "num_hidden_groups"),
               ("inner_group_num", "inner_group_num")),
    "electra": (("embedding_size", "embedding_size"),),
}
_COMMON_DEFAULTS = dict(hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                        max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02,
                        layer_norm_eps=1e-12, pad_token_id=0)
HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": dict(_COMMON_DEFAULTS, vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072),
    "albert": dict(_COMMON_DEFAULTS, vocab_size=30000, embedding_size=128, hidden_size=4096, num_hidden_layers=12,
                   num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384, inner_group_num=1,
                   hidden_act="gelu_new", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "electra": dict(_COMMON_DEFAULTS, vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                    num_attention_heads=4, intermediate_size=1024),
}


# ---------------------------------------------------------------------------------------
# Configs.
# ---------------------------------------------------------------------------------------
def config_from_hf(hf_config: Mapping[str, Any], arch: Architecture, source: str = "config.json",
                   **overrides: Any) -> BertConfig:
    """Our config for ``arch`` from a HF ``config.json`` dict (HF's defaults for absent keys).

    Raises:
      CheckpointError: for features we do not implement (decoders, relative positions, layer groups,
        unknown activations) or malformed values, naming ``source``.
    """
    mt = arch.model_type
    if hf_config.get("is_decoder") or hf_config.get("add_cross_attention"):
        raise CheckpointError(f"{source}: is_decoder/add_cross_attention models are not supported (encoders only)")
    pos_type = hf_config.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
        raise CheckpointError(f"{source}: position_embedding_type {pos_type!r} is not supported (only 'absolute')")
    values = {**HF_DEFAULTS[mt], **{k: v for k, v in hf_config.items() if v is not None}}
    fields = {ours: values[hf] for hf, ours in CONFIG_FIELDS + EXTRA_CONFIG_FIELDS[mt]}
    fields.update(overrides)
    try:
        return arch.config_cls(**fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: not a usable {arch.name} config ({e})") from e


def config_to_hf(arch: Architecture, config: BertConfig, dtype: str = "float32") -> dict[str, Any]:
    """A HF ``config.json`` dict for ``arch`` (every field written; ``tie_word_embeddings`` true).

    Raises:
      CheckpointError: if BERT has an ``embedding_size`` different from ``hidden_size`` (HF BERT has no projection).
    """
    mt = arch.model_type
    if mt == "bert" and config.embedding_dim != config.hidden_size:
        raise CheckpointError(
            f"HF BERT has no embedding projection: embedding_size {config.embedding_size} must equal hidden_size "
            f"{config.hidden_size}; export it as an ELECTRA or ALBERT model instead"
        )
    hf = {hf_key: getattr(config, ours) for hf_key, ours in CONFIG_FIELDS + EXTRA_CONFIG_FIELDS[mt]}
    if "embedding_size" in hf:
        hf["embedding_size"] = config.embedding_dim
    hf.update(architectures=[arch.name], model_type=mt, tie_word_embeddings=True, dtype=dtype)
    return hf


# ---------------------------------------------------------------------------------------
# Tables expanded for one config.
# ---------------------------------------------------------------------------------------
def weight_map(arch: Architecture, config: BertConfig, base: str | None = None) -> list[Row]:
    """The expanded rows ``[(hf_name, our_path, transform), ...]`` for ``config`` (unscanned paths).

    Args:
      arch: the architecture.
      config: our config (decides the layer count and whether ``embeddings_project`` exists).
      base: backbone prefix; default ``'{model_type}.'`` for head models and ``''`` for bare ones.
    """
    base = ("" if arch.is_base else f"{arch.model_type}.") if base is None else base
    expected = expected_param_shapes(arch, config)
    rows = expand_rows(((hf.replace("{base}", base), ours, t) for hf, ours, t in arch.rows), config.num_layers)
    return [r for r in rows if r[1] in expected]


def expected_param_shapes(arch: Architecture, config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Our flat parameter shapes (unscanned) for ``arch``, computed abstractly from the module itself."""
    return module_param_shapes(arch.module(config.replace(scan_layers=False, remat_policy="none")))


def _describe(arch: Architecture, config: BertConfig) -> str:
    return (f"{arch.name}(hidden={config.hidden_size}, layers={config.num_layers}, heads={config.num_heads}, "
            f"intermediate={config.intermediate_size}, embedding={config.embedding_dim}, vocab={config.vocab_size}, "
            f"positions={config.max_position_embeddings})")


# ---------------------------------------------------------------------------------------
# Import.
# ---------------------------------------------------------------------------------------
def resolve_architecture(hf_config: Mapping[str, Any], family: str | None = None,
                         source: str = "config.json") -> Architecture:
    """Which of our architectures reads this checkpoint.

    Args:
      hf_config: the parsed config.json.
      family: None (follow the file's ``architectures``), a model type ('bert', 'albert', 'electra':
        the file's architecture, which must be of that type), or an architecture name. A bare
        ``*Model`` name reads just the encoder of any checkpoint of its type (heads ignored).
      source: the config.json path, for messages.

    Raises:
      CheckpointError: the checkpoint is of another family or architecture.
      ValueError: ``family`` is not a known name.
    """
    if family is not None and family not in ARCHITECTURES and family not in BASE_ARCHITECTURE:
        known = sorted(ARCHITECTURES) + sorted(BASE_ARCHITECTURE)
        raise ValueError(f"unknown family {family!r}; expected one of {known}")
    model_type = hf_config.get("model_type")
    declared = (hf_config.get("architectures") or [None])[0]
    wanted_type = ARCHITECTURES[family].model_type if family in ARCHITECTURES else family
    if model_type not in BASE_ARCHITECTURE or (wanted_type and model_type != wanted_type):
        expected = repr(wanted_type) if wanted_type else "'bert', 'albert' or 'electra'"
        raise CheckpointError(
            f"{source}: model_type {model_type!r} (architecture {declared}) is not a checkpoint for "
            f"{family or 'a BERT/ALBERT/ELECTRA model'}; expected model_type {expected}"
        )
    arch_name = ARCHITECTURE_ALIASES.get(declared, declared)
    if family in ARCHITECTURES:
        if family != BASE_ARCHITECTURE[model_type] and arch_name != family:
            raise CheckpointError(
                f"{source}: holds a {declared}, not a {family}; ask for family "
                f"{BASE_ARCHITECTURE[model_type]!r} to import its encoder only"
            )
        return ARCHITECTURES[family]
    if arch_name in ARCHITECTURES and ARCHITECTURES[arch_name].model_type == model_type:
        return ARCHITECTURES[arch_name]
    return ARCHITECTURES[BASE_ARCHITECTURE[model_type]]  # an unknown head: the encoder only


def _normalized_names(reader: TensorReader) -> dict[str, str]:
    """Current HF name -> name in the file (old checkpoints call LayerNorm weights gamma/beta)."""
    out = {}
    for name in reader.keys():
        norm = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[norm] = name
    return out


def _base_prefix(arch: Architecture, names: Mapping[str, str]) -> str:
    """'{model_type}.' for head models; for bare models whichever prefix the file uses."""
    prefix = f"{arch.model_type}."
    if arch.is_base and not any(n.startswith(prefix + "embeddings.") for n in names):
        return ""
    return prefix


def _check_tied(reader, names, arch, base, flat_hf: Mapping[str, np.ndarray], tie: bool, context: str) -> None:
    """Our decoders are tied to the word embeddings: a distinct decoder in the file is refused."""
    for name, source in arch.tied:
        name, source = name.replace("{base}", base), source.replace("{base}", base)
        check_tied_copy(reader, name, names.get(name), source, flat_hf[source], tie, context)


def _check_unexpected(reader, names, arch: Architecture, base: str, rows: list[Row], context: str) -> None:
    known = {r[0] for r in rows} | {t[0].replace("{base}", base) for t in arch.tied}
    ignored = tuple(p.replace("{base}", base) for p in arch.ignored)
    refuse_leftovers(reader, (
        n for n in names
        if n not in known and not n.startswith(ignored) and not (arch.is_base and base and not n.startswith(base))
    ), context, names)


def import_hf(hf_dir: str | pathlib.Path, family: str | None = None, **overrides: Any):
    """Reads a HF BERT/ALBERT/ELECTRA folder (config.json + model.safetensors / sharded / pytorch_model.bin).

    Args:
      hf_dir: the folder.
      family: see :func:`resolve_architecture` (None: the file's architecture).
      **overrides: our config fields to set (e.g. ``scan_layers=True``: params come back stacked).

    Returns:
      ``(family, config, params)``: the architecture name ('BertForMaskedLM', 'AlbertForMaskedLM',
      'ElectraForPreTraining', ...; ``ARCHITECTURES[family].module`` is our module), our config and a
      nested dict of float32 numpy params.

    Raises:
      CheckpointError: wrong family, missing/unexpected tensor or wrong shape (naming file and tensor).
    """
    config_path, hf_config = read_config_json(hf_dir)
    source = str(config_path)
    arch = resolve_architecture(hf_config, family, source)
    config = config_from_hf(hf_config, arch, source)  # refuse bad configs before reading weights
    reader = TensorReader(hf_dir)
    names = _normalized_names(reader)
    base = _base_prefix(arch, names)
    rows = weight_map(arch, config, base)
    expected = expected_param_shapes(arch, config)
    context = f"{_describe(arch, config)} from {config_path}"
    flat = read_table(reader, rows, expected, context, names)
    flat_hf = {hf_name: apply_transform(flat[ours], transform) for hf_name, ours, transform in rows}
    _check_tied(reader, names, arch, base, flat_hf, hf_config.get("tie_word_embeddings", True) is not False, context)
    _check_unexpected(reader, names, arch, base, rows, context)
    config = config.replace(**overrides) if overrides else config
    return arch.name, config, nest_params(flat, config.scan_layers)


# ---------------------------------------------------------------------------------------
# Export.
# ---------------------------------------------------------------------------------------
def export_hf(family: str, config: BertConfig, params: Mapping, out_dir: str | pathlib.Path,
              dtype: str = "float32", write_tokenizer: bool = True) -> pathlib.Path:
    """Writes ``config.json`` + ``model.safetensors`` (+ ProtBert tokenizer files) for ``transformers.<family>``.

    Args:
      family: an architecture name, e.g. 'BertForMaskedLM', 'BertModel', 'AlbertForMaskedLM',
        'ElectraForPreTraining', 'ElectraForMaskedLM'.
      config: our config (its class must be the family's: BertConfig, AlbertConfig or ElectraConfig).
      params: the module's params, scanned or not (numpy or jax arrays, sharded or not).
      out_dir: folder (created).
      dtype: 'float32', 'float16' or 'bfloat16' for the weights.
      write_tokenizer: also write ProtBert's tokenizer files (when ``vocab_size >= 30``).

    Returns:
      ``out_dir`` as a Path.

    Raises:
      CheckpointError: a parameter is missing or has the wrong shape, or the config does not fit ``family``.
      ValueError: unknown family.
    """
    if family not in ARCHITECTURES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[family]
    if type(config) is not arch.config_cls:
        raise CheckpointError(f"{family} needs a {arch.config_cls.__name__}, got a {type(config).__name__}")
    hf_config = config_to_hf(arch, config, dtype)  # refuses what HF cannot express before any work
    tensors = export_table(params, weight_map(arch, config), expected_param_shapes(arch, config),
                           _describe(arch, config))
    out = write_hf_folder(out_dir, tensors, hf_config, dtype)
    if write_tokenizer and config.vocab_size >= alphabet.PROT_BERT_VOCAB_SIZE:
        write_prot_bert_tokenizer(out, config.max_position_embeddings)
    return out


def export_electra_pretraining(config, params: Mapping, out_dir: str | pathlib.Path,
                               dtype: str = "float32") -> tuple[pathlib.Path, pathlib.Path]:
    """Exports an ``ElectraPretrainingModel`` as ``out_dir/generator`` and ``out_dir/discriminator`` HF folders.

    Both carry the shared embeddings (HF has no cross-model tying).

    Returns:
      ``(generator_dir, discriminator_dir)``.
    """
    from prottrans_jax.models.electra import split_pretraining_params

    gen, disc = split_pretraining_params(unfreeze(params))
    out = pathlib.Path(out_dir)
    return (export_hf("ElectraForMaskedLM", config.generator, gen, out / "generator", dtype),
            export_hf("ElectraForPreTraining", config.discriminator, disc, out / "discriminator", dtype))
