"""Model configs <-> JSON-able dicts (checkpoint metadata), and the model fingerprint a resume checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

import jax.numpy as jnp

CLASS_KEY = "__config_class__"
# Fields that change neither a parameter's shape nor what it means: two configs differing only here
# hold interchangeable weights (an imported checkpoint fits a run that sets them differently).
LAYOUT_ONLY_FIELDS = frozenset({
    "dtype", "param_dtype", "dropout_rate", "hidden_dropout_rate", "attention_dropout_rate",
    "float32_attention_logits", "scan_layers", "remat_policy",
    # Transformer-XL / XLNet: dropout and how far attention reaches back are run settings, not weights.
    "dropout", "dropatt", "mem_len", "reuse_len", "clamp_len", "same_length",
})


def _config_classes() -> dict[str, type]:
    from prottrans_jax.models.albert import AlbertConfig
    from prottrans_jax.models.bert import BertConfig
    from prottrans_jax.models.electra import ElectraConfig, ElectraPretrainingConfig
    from prottrans_jax.models.t5 import T5Config
    from prottrans_jax.models.transfo_xl import TransfoXLConfig
    from prottrans_jax.models.xlnet import XLNetConfig

    return {c.__name__: c for c in (T5Config, BertConfig, AlbertConfig, ElectraConfig, ElectraPretrainingConfig,
                                    XLNetConfig, TransfoXLConfig)}


def _dtype_name(value: Any) -> str:
    return jnp.dtype(value).name


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen model config -> a JSON-serialisable dict (class name under ``__config_class__``)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a model config dataclass, got {type(config).__name__}")
    out: dict[str, Any] = {CLASS_KEY: type(config).__name__}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif field.name.endswith("dtype"):
            value = _dtype_name(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def config_from_dict(data: Mapping[str, Any], source: str = "checkpoint metadata") -> Any:
    """Inverse of :func:`config_to_dict`.

    Raises:
      ValueError: an unknown class or a field the class does not have, naming ``source``.
    """
    classes = _config_classes()
    name = data.get(CLASS_KEY)
    if name not in classes:
        raise ValueError(f"{source}: unknown model config class {name!r}; known: {sorted(classes)}")
    cls = classes[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key == CLASS_KEY:
            continue
        if key not in fields:
            raise ValueError(f"{source}: {name} has no field {key!r} (written by a newer prottrans-jax?)")
        if isinstance(value, Mapping) and CLASS_KEY in value:
            value = config_from_dict(value, source)
        elif key.endswith("dtype") and isinstance(value, str):
            value = getattr(jnp, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def weights_fields(config: Any) -> dict[str, Any]:
    """The config as a dict without :data:`LAYOUT_ONLY_FIELDS` (recursively): what fixes the weights."""
    def strip(d):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k not in LAYOUT_ONLY_FIELDS}

    return strip(config_to_dict(config))


def weights_fingerprint(config: Any) -> str:
    """SHA-256 of :func:`weights_fields`: equal for configs whose weights are interchangeable."""
    canonical = json.dumps(weights_fields(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def weights_mismatch(saved: Any, wanted: Any) -> str | None:
    """None when the two configs hold interchangeable weights, else the fields that differ."""
    if weights_fingerprint(saved) == weights_fingerprint(wanted):
        return None
    return weights_diff(saved, wanted)


def weights_diff(saved: Any, wanted: Any) -> str:
    """``field: saved vs wanted`` for each weights field that differs (for error messages)."""
    a, b = _flat(weights_fields(saved)), _flat(weights_fields(wanted))
    diffs = [f"{k}: {a.get(k, '<absent>')!r} saved vs {b.get(k, '<absent>')!r} asked"
             for k in sorted(a.keys() | b.keys()) if a.get(k, ...) != b.get(k, ...)]
    return "; ".join(diffs) or "no field differs"


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
