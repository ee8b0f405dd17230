"""Loads a model from whatever a user has: an Orbax model directory (ours or t5x's) or a HuggingFace folder.

TensorFlow-free: export, import and embedding use this without the data pipeline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re
from typing import Any, Optional

import jax
import numpy as np
from flax.core import unfreeze

from prottrans_jax import config_io
from prottrans_jax.hf import checkpoint_reader
from prottrans_jax.hf.common import CheckpointError, flatten_params, read_config_json
from prottrans_jax.models import configs, layers
from prottrans_jax.models.albert import AlbertConfig
from prottrans_jax.models.bert import BertConfig
from prottrans_jax.models.electra import ElectraConfig, ElectraPretrainingConfig, split_pretraining_params
from prottrans_jax.models.t5 import T5Config
from prottrans_jax.models.transfo_xl import TransfoXLConfig
from prottrans_jax.models.xlnet import XLNetConfig

FAMILIES = ("t5", "bert", "albert", "electra", "xlnet", "transfo_xl")
# What our trainer's modules are, in HuggingFace's words.
ARCHITECTURE_OF_CONFIG = {
    T5Config: "T5ForConditionalGeneration",
    BertConfig: "BertForMaskedLM",
    AlbertConfig: "AlbertForMaskedLM",
    ElectraConfig: "ElectraForPreTraining",
    ElectraPretrainingConfig: "ElectraPretrainingModel",
    XLNetConfig: "XLNetLMHeadModel",
    TransfoXLConfig: "TransfoXLLMHeadModel",
}
ENCODER_ONLY_ARCHITECTURES = ("T5EncoderModel", "BertModel", "AlbertModel", "ElectraModel", "XLNetModel",
                              "TransfoXLModel")
# The autoregressive pair: causal (Transformer-XL) and permutation (XLNet) language models.
AUTOREGRESSIVE_FAMILIES = ("xlnet", "transfo_xl")


@dataclasses.dataclass
class LoadedModel:
    """Weights and config of one model, unscanned, as host numpy.

    Attributes:
      config: our config (``T5Config``, ``BertConfig``, ``AlbertConfig``, ``ElectraConfig``,
        ``ElectraPretrainingConfig``, ``XLNetConfig`` or ``TransfoXLConfig``), with ``scan_layers=False``.
      params: nested dict of numpy arrays in our module's layout.
      architecture: what the params are, in HF's class names ('T5ForConditionalGeneration',
        'T5EncoderModel', 'BertForMaskedLM', 'BertModel', ..., or 'ElectraPretrainingModel' for our
        generator + discriminator pair).
      source: the path it was read from.
      step: the training step of an Orbax checkpoint (None for HF folders).
    """

    config: Any
    params: dict
    architecture: str
    source: str
    step: Optional[int] = None

    @property
    def family(self) -> str:
        """'t5', 'bert', 'albert', 'electra', 'xlnet' or 'transfo_xl'."""
        return family_of(self.architecture)

    @property
    def encoder_only(self) -> bool:
        return self.architecture in ENCODER_ONLY_ARCHITECTURES

    def describe(self) -> str:
        where = f"{self.source}" + (f" (step {self.step})" if self.step is not None else "")
        return f"{self.architecture} from {where}"


def family_of(architecture: str) -> str:
    """The family of a HF class name: 'TransfoXLLMHeadModel' -> 'transfo_xl', 'XLNetModel' -> 'xlnet'."""
    name = architecture.lower()
    for family in FAMILIES:
        if name.startswith(family.replace("_", "")):
            return family
    raise ValueError(f"unknown architecture {architecture!r}")


def load_model(path: str | pathlib.Path, *, step: Optional[int] = None, config_name: Optional[str] = None,
               family: Optional[str] = None) -> LoadedModel:
    """Reads a model from a HF folder (``config.json`` + weights) or an Orbax model/checkpoint directory.

    Args:
      path: a HF folder; a model directory with ``checkpoint_<step>/`` subfolders (our trainer's or
        t5x's); or one ``checkpoint_<step>`` folder.
      step: which checkpoint of a model directory (default: the newest finished one).
      config_name: a registered config name (``prot_t5_xl_u50``...) for checkpoints that carry no
        model config of their own (t5x's); for ours it must agree with the saved one.
      family: if given (one of :data:`FAMILIES`), refuse a model of any other family.

    Raises:
      FileNotFoundError: nothing at ``path``, or no finished checkpoint there.
      CheckpointError: a model of another family or config, or weights that do not fit their config.
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family {family!r} not in {FAMILIES}")
    p = pathlib.Path(path).absolute()  # Orbax reads absolute paths only
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such model directory (expected a HuggingFace folder with config.json "
                                "or a training directory with checkpoint_<step>/ folders)")
    if (p / "config.json").is_file():
        if step is not None:
            raise ValueError(f"{p} is a HuggingFace folder: it has no steps (drop --step)")
        model = load_hf(p)
        if config_name is not None:
            _require_named(model.config, config_name, p)
    else:
        model = load_orbax(p, step, config_name)
    require_family(model, family, p)
    return model


def require_family(model: LoadedModel, family: Optional[str], where) -> None:
    """Refuses a model of another family than ``family`` (None accepts any)."""
    if family is not None and model.family != family:
        raise CheckpointError(
            f"{where}: holds a {model.architecture} ({model.family} family) model, not a {family} model; "
            f"drop --family or point to a {family} checkpoint")


def _require_named(config: Any, config_name: str, where) -> None:
    """Refuses a model whose weights are not those of the registered config ``config_name``."""
    diff = config_io.weights_mismatch(config, configs.get_config(config_name))
    if diff:
        raise CheckpointError(f"{where}: holds a {type(config).__name__} model that is not {config_name!r} "
                              f"({diff}); drop --config to use the model's own config")


# ---------------------------------------------------------------------------------------
# HuggingFace folders.
# ---------------------------------------------------------------------------------------
def load_hf(hf_dir: str | pathlib.Path) -> LoadedModel:
    """A HF T5 / BERT / ALBERT / ELECTRA / XLNet / Transformer-XL folder. An ``ElectraForPreTraining``
    folder with a ``generator/`` sub-folder (as ``export-hf`` writes) loads as the generator + discriminator pair."""
    from prottrans_jax.hf import encoder_maps, t5_map, xlnet_map

    config_path, hf_config = read_config_json(hf_dir)
    model_type = hf_config.get("model_type")
    if model_type in t5_map.T5_MODEL_TYPES:
        config, params = t5_map.import_t5(hf_dir)
        arch = "T5ForConditionalGeneration" if "decoder" in params else "T5EncoderModel"
        return LoadedModel(config, params, arch, str(hf_dir))
    if model_type == "xlnet":
        arch, config, params = xlnet_map.import_hf(hf_dir)
        _require_prot_xlnet_ids(pathlib.Path(hf_dir))
        return LoadedModel(config, params, arch, str(hf_dir))
    if model_type == "transfo-xl":
        from prottrans_jax.hf import transfo_xl_map

        arch, config, params = transfo_xl_map.import_hf(hf_dir)
        return LoadedModel(config, params, arch, str(hf_dir))
    if model_type not in encoder_maps.BASE_ARCHITECTURE:
        raise CheckpointError(f"{config_path}: model_type {model_type!r} is not a family prottrans-jax reads "
                              f"(t5, bert, albert, electra, xlnet, transfo-xl)")
    arch, config, params = encoder_maps.import_hf(hf_dir)
    generator_dir = pathlib.Path(hf_dir) / "generator"
    if arch == "ElectraForPreTraining" and (generator_dir / "config.json").is_file():
        from prottrans_jax.models.electra import merge_pretraining_params

        gen_arch, gen_config, gen_params = encoder_maps.import_hf(generator_dir, "ElectraForMaskedLM")
        pair = ElectraPretrainingConfig(generator=gen_config, discriminator=config)
        return LoadedModel(pair, merge_pretraining_params(gen_params, params), "ElectraPretrainingModel",
                           str(hf_dir))
    return LoadedModel(config, params, arch, str(hf_dir))


def _require_prot_xlnet_ids(hf_dir: pathlib.Path) -> None:
    """Refuses an XLNet folder whose ``spiece.model`` gives other ids than ProtXLNet's table.

    Everything downstream (embed, generate, score, training) tokenizes with
    :mod:`prottrans_jax.xlnet_alphabet`; a folder whose own tokenizer disagrees (another XLNet, or a
    released ProtXLNet file whose residue order differs from the inferred one) would be fed wrong ids.
    """
    spiece = hf_dir / "spiece.model"
    if not spiece.is_file():
        return
    from prottrans_jax import xlnet_alphabet

    diffs = xlnet_alphabet.compare_with_sentencepiece_model(spiece)
    if diffs:
        raise CheckpointError(
            f"{spiece}: this tokenizer's ids differ from ProtXLNet's that prottrans-jax tokenizes with "
            f"({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}), so its proteins would be fed wrong ids; "
            "if this is the released Rostlab/prot_xlnet tokenizer, please report these lines (the residue order "
            "17-36 was inferred)")


# ---------------------------------------------------------------------------------------
# Orbax model directories.
# ---------------------------------------------------------------------------------------
def find_checkpoint(path: pathlib.Path, step: Optional[int] = None) -> tuple[pathlib.Path, int]:
    """``(checkpoint_<step> dir, step)`` inside a model directory, or ``path`` itself if it is one."""
    match = checkpoint_reader.STEP_DIR_RE.match(path.name)
    if match and (path / checkpoint_reader.STATE_ITEM).is_dir():
        if step is not None and step != int(match.group(1)):
            raise ValueError(f"{path} is the checkpoint of step {match.group(1)}, not {step}")
        return path, int(match.group(1))
    steps = checkpoint_reader.finished_step_dirs(str(path))
    if not steps:
        raise FileNotFoundError(
            f"{path}: no finished checkpoint_<step>/ folder (with state/ and {checkpoint_reader.COMMIT_FILE}) and no "
            "config.json; point to a training directory, one of its checkpoint folders, or a HuggingFace folder")
    if step is None:
        step = max(steps)
    if step not in steps:
        raise FileNotFoundError(f"{path}: no finished checkpoint for step {step}; finished steps: {sorted(steps)}")
    return pathlib.Path(str(steps[step])), step


def load_orbax(path: str | pathlib.Path, step: Optional[int] = None,
               config_name: Optional[str] = None) -> LoadedModel:
    """Parameters of one checkpoint (optimizer state is not read), unscanned, with their config."""
    ckpt_dir, step = find_checkpoint(pathlib.Path(path).absolute(), step)
    meta = checkpoint_reader.read_meta(str(ckpt_dir))
    config = _orbax_config(ckpt_dir, meta, config_name)
    keys = checkpoint_reader.state_keys(str(ckpt_dir))
    key = "params" if "params" in keys else "target" if "target" in keys else None
    if key is None:
        raise CheckpointError(f"{ckpt_dir}/state: holds neither 'params' (prottrans-jax) nor 'target' (t5x); "
                              f"its keys are {keys}")
    params = layers.unstack_layer_params(checkpoint_reader.restore_subtree_numpy(str(ckpt_dir), key))
    config = config.replace(scan_layers=False)
    arch = meta.get("architecture") or ARCHITECTURE_OF_CONFIG[type(config)]
    _check_shapes(config, arch, params, ckpt_dir)
    return LoadedModel(config, params, arch, str(ckpt_dir), step)


def _orbax_config(ckpt_dir: pathlib.Path, meta: dict, config_name: Optional[str]) -> Any:
    if "model_config" in meta:
        saved = config_io.config_from_dict(meta["model_config"], source=str(ckpt_dir / "meta"))
        if config_name is not None:
            _require_named(saved, config_name, ckpt_dir)
        return saved
    config_name = config_name or _t5x_config_name(ckpt_dir.parent)
    if config_name is None:
        raise CheckpointError(
            f"{ckpt_dir}: the checkpoint records no model config (a t5x checkpoint?) and no config.gin beside it "
            f"names one; pass --config NAME (one of {', '.join(configs.list_configs())})")
    return configs.get_config(config_name)


def _t5x_config_name(model_dir: pathlib.Path) -> Optional[str]:
    """The config name in a t5x run's ``config.gin`` (our t5x gins set ``MODEL_CONFIG_NAME``)."""
    gin_file = model_dir / "config.gin"
    if not gin_file.is_file():
        return None
    text = gin_file.read_text()
    for pattern in (r"^MODEL_CONFIG_NAME\s*=\s*['\"]([\w.-]+)['\"]", r"get_config\.name\s*=\s*['\"]([\w.-]+)['\"]",
                    r"^\s+name\s*=\s*['\"]([\w.-]+)['\"]"):
        match = re.search(pattern, text, re.MULTILINE)
        if match and match.group(1) in configs.CONFIGS:
            return match.group(1)
    return None


def module_for(config: Any, architecture: str):
    """Our Linen module for ``architecture`` (a HF class name or 'ElectraPretrainingModel')."""
    from prottrans_jax.hf import encoder_maps

    if architecture in encoder_maps.ARCHITECTURES:
        return encoder_maps.ARCHITECTURES[architecture].module(config)
    return configs.build_model(config, architecture in ENCODER_ONLY_ARCHITECTURES)


def expected_shapes(config: Any, architecture: str) -> dict[str, tuple[int, ...]]:
    """Flat parameter shapes of the module for ``architecture``, computed abstractly."""
    module = module_for(config.replace(scan_layers=False), architecture)
    shapes = jax.eval_shape(lambda rng: module.init(rng, **module.dummy_inputs()), jax.random.key(0))
    return {k: tuple(v.shape) for k, v in flatten_params(unfreeze(shapes["params"])).items()}


def _check_shapes(config: Any, architecture: str, params: dict, where: pathlib.Path) -> None:
    want = expected_shapes(config, architecture)
    have = {k: tuple(np.shape(v)) for k, v in flatten_params(params).items()}
    problems = [f"{k}: {have[k]} saved vs {want[k]} expected" for k in sorted(want.keys() & have.keys())
                if have[k] != want[k]]
    missing = sorted(want.keys() - have.keys())
    if missing:
        problems.append(f"missing {missing[:3]}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
    if problems:
        raise CheckpointError(f"{where}: its weights do not fit {type(config).__name__} ({architecture}): "
                              + "; ".join(problems[:5]))


# ---------------------------------------------------------------------------------------
# The encoder that gives embeddings.
# ---------------------------------------------------------------------------------------
def encoder_of(model: LoadedModel) -> tuple[Any, Any, dict]:
    """``(module, encoder config, params)`` of the embedding encoder: T5's encoder, BERT/ALBERT's
    backbone, ELECTRA's discriminator backbone (the generator's for a lone generator)."""
    config, params = model.config, model.params
    if isinstance(config, ElectraPretrainingConfig):
        _, params = split_pretraining_params(params)
        config = config.discriminator
    module = configs.build_model(config, encoder_only=True)
    wanted = jax.eval_shape(lambda rng: module.init(rng, **module.dummy_inputs()), jax.random.key(0))["params"]
    missing = sorted(set(wanted) - set(params))
    if missing:
        raise CheckpointError(f"{model.source}: no {missing} weights for the {type(module).__name__} encoder")
    return module, config, {k: params[k] for k in wanted}


FINGERPRINT_SAMPLE_VALUES = 4096  # values hashed per tensor (strided over the whole tensor)


def encoder_fingerprint(model: LoadedModel) -> str:
    """A digest of the embedding encoder's weights, recorded by ``embed`` and by the heads trained on them.

    SHA-256 over every encoder tensor's name, shape, dtype and a strided sample of up to
    :data:`FINGERPRINT_SAMPLE_VALUES` of its values: a retrained, fine-tuned or LoRA-merged encoder gets
    a new fingerprint, while the same weights read from a training directory, a HF export or an
    encoder-only export get the same one. Well under a second on a 1.2 B-parameter model.
    """
    return params_fingerprint(encoder_of(model)[2])


def params_fingerprint(params: dict) -> str:
    """:func:`encoder_fingerprint` of a nested parameter dict."""
    h = hashlib.sha256()
    for name, x in sorted(flatten_params(params).items()):
        shape = tuple(np.shape(x))
        h.update(f"{name}|{shape}|{np.dtype(x.dtype).name}|".encode())
        size = int(np.prod(shape))
        flat = np.arange(0, size, max(1, -(-size // FINGERPRINT_SAMPLE_VALUES)))  # strided positions
        sample = np.asarray(x[np.unravel_index(flat, shape)] if shape else np.reshape(x, (1,)))
        h.update(np.ascontiguousarray(sample).tobytes())
    return h.hexdigest()
