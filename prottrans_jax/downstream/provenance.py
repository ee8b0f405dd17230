"""Where a head's features came from (an encoding, or a model's weights, layer and pooling), and the check that
a head is given the same features it was trained on."""

from __future__ import annotations

import pathlib
from typing import Any, Optional

import numpy as np

from prottrans_jax.downstream import encodings, inputs

LANGUAGE_MODEL_KINDS = ("model", "h5")  # embedded now, or read from an embed file


def model_fingerprint(loaded) -> str:
    """A digest of the embedding encoder's weights: :func:`prottrans_jax.model_io.encoder_fingerprint`."""
    from prottrans_jax import model_io

    return model_io.encoder_fingerprint(loaded)


def features_provenance(spec: str, model=None, *, per_residue: Optional[bool] = None,
                        layer: Optional[int] = None) -> dict[str, Any]:
    """What a ``--features`` spec feeds a head.

    Args:
      spec: ``onehot``, ``blosum62``, ``h5:FILE`` (an ``embed`` output) or ``model:DIR``.
      model: for ``model:DIR``, the already loaded ``model_io.LoadedModel`` (else it is loaded from DIR).
      per_residue: whether the head reads per-residue features (default: per residue for a model, the
        file's pooling for an embed file).
      layer: the hidden state a model's features come from (default its final output).

    Returns:
      ``{'features': kind}`` for an encoding; for a language model also ``model_fingerprint``,
      ``architecture``, ``layer``, ``pooling`` ('per_residue' or 'per_protein'), ``hidden_size`` and
      ``source`` (an embed file's fingerprint is None when an older ``embed`` wrote it).
    """
    kind, where = inputs.parse_spec(spec)
    if kind in encodings.BASELINES:
        return {"features": kind}
    if kind == "h5":
        return _h5_provenance(where, per_residue)
    from prottrans_jax import model_io
    from prottrans_jax.embedding import encoder

    loaded = model if model is not None else model_io.load_model(where)
    _, config, params = model_io.encoder_of(loaded)
    return {"features": "model", "model_fingerprint": model_io.params_fingerprint(params), "architecture": loaded.architecture,
            "layer": encoder.resolve_layer(layer, config), "pooling": _pooling(per_residue is not False),
            "hidden_size": int(getattr(config, "d_model", None) or config.hidden_size),
            "source": str(pathlib.Path(loaded.source).absolute())}


def _pooling(per_residue: bool) -> str:
    return "per_residue" if per_residue else "per_protein"


def _h5_provenance(path: str, per_residue: Optional[bool]) -> dict[str, Any]:
    import h5py

    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such embedding file (write it with prottrans-jax embed)")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None

    def value(key):
        v = attrs.get(key)
        return v.item() if isinstance(v, np.generic) else v

    return {"features": "h5", "model_fingerprint": value("model_fingerprint") or None,
            "architecture": value("architecture"), "layer": value("layer"),
            "pooling": value("pooling") if per_residue is None else _pooling(per_residue),
            "hidden_size": value("hidden_size"), "source": str(pathlib.Path(path).absolute()),
            "model": value("model")}


def uses_language_model(provenance: dict) -> bool:
    """Whether features of this provenance come from a language model (not one-hot/BLOSUM62)."""
    return provenance.get("features") in LANGUAGE_MODEL_KINDS


def of_head(info: dict) -> dict[str, Any]:
    """A trained head's provenance from its ``head.json`` (older heads: from their ``features`` field)."""
    if info.get("provenance"):
        return dict(info["provenance"])
    kind, where = inputs.parse_spec(info["features"]) if info.get("features") else ("onehot", None)
    out: dict[str, Any] = {"features": kind}
    if kind in LANGUAGE_MODEL_KINDS:
        out.update(source=where, hidden_size=info.get("input_dim"))
    return out


def describe(provenance: dict) -> str:
    """One phrase: 'onehot features' or 'T5ForConditionalGeneration embeddings (weights 1a2b3c4d5e6f, layer 2, ...)'."""
    if not uses_language_model(provenance):
        return f"{provenance.get('features')} features"
    fp = provenance.get("model_fingerprint")
    parts = [f"weights {fp[:12]}" if fp else "weights not recorded"]
    parts += [f"{k} {provenance[k]}" for k in ("layer",) if provenance.get(k) is not None]
    parts += [str(provenance[k]) for k in ("pooling",) if provenance.get(k)]
    source = provenance.get("model") or provenance.get("source")
    return (f"{provenance.get('architecture') or 'language-model'} embeddings ({', '.join(parts)})"
            + (f" from {source}" if source else ""))


def _field(provenance: dict, key: str):
    """A provenance value, None when unknown ('family' derived from the architecture)."""
    if key != "family":
        value = provenance.get(key)
        return None if value == "" else value
    from prottrans_jax import model_io

    try:
        return model_io.family_of(provenance.get("architecture") or "")
    except ValueError:
        return None


def check_compatible(head_dir, head_provenance: dict, actual_provenance: dict) -> None:
    """Refuses features that differ from what the head was trained on.

    Fields missing on either side (older heads and embed files, or a partial provenance for a check
    before a model is loaded) are not compared.

    Raises:
      ValueError: naming the head folder, what it was trained on, what it was given, and the fix.
    """
    trained, given = head_provenance, actual_provenance
    if uses_language_model(trained) != uses_language_model(given) or (
            not uses_language_model(trained) and trained.get("features") != given.get("features")):
        if uses_language_model(trained):
            fix = "pass the language model it was trained on (--model / --features model:DIR or h5:FILE)"
        else:
            fix = (f"it does not use a language model: use --features {trained.get('features')} (or leave "
                   "--features out) and drop --model")
        raise ValueError(f"{head_dir}: the head was trained on {describe(trained)} but is given "
                         f"{describe(given)}; {fix}")
    if not uses_language_model(trained):
        return
    both = [k for k in ("model_fingerprint", "family", "layer", "pooling", "hidden_size")
            if _field(trained, k) is not None and _field(given, k) is not None]
    if "model_fingerprint" in both:  # the weights decide; the architecture may differ (an encoder-only export)
        both.remove("family")
    diffs = [k for k in both if _field(trained, k) != _field(given, k)]
    if diffs:
        raise ValueError(
            f"{head_dir}: the head was trained on {describe(trained)} but is given {describe(given)} "
            f"(they differ in {', '.join(diffs)}); pass the model the head was trained on, or train a head on "
            "this model's embeddings (prottrans-jax heads train --features model:DIR)")
