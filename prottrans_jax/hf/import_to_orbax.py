"""``import-hf``: a HuggingFace folder -> ``MODEL_DIR/checkpoint_0``, a params-only Orbax checkpoint our trainer starts from."""

from __future__ import annotations

import datetime
import os
import pathlib
from typing import Optional

from prottrans_jax import atomic_files, config_io
from prottrans_jax.hf import checkpoint_reader
from prottrans_jax.model_io import ARCHITECTURE_OF_CONFIG, LoadedModel, load_hf, require_family
from prottrans_jax.models import configs


def matching_config_names(config) -> list[str]:
    """Registered config names whose weights are interchangeable with ``config``'s."""
    fp = config_io.weights_fingerprint(config)
    out = []
    for name in configs.list_configs():
        candidate = configs.get_config(name)
        if type(candidate) is type(config) and config_io.weights_fingerprint(candidate) == fp:
            out.append(name)
    return out


def import_hf_to_orbax(hf_dir: str | pathlib.Path, model_dir: str | pathlib.Path,
                       family: Optional[str] = None, overwrite: bool = False) -> tuple[LoadedModel, pathlib.Path]:
    """Writes the weights of a HF folder as ``model_dir/checkpoint_0`` (params, step 0, model config).

    ``python -m prottrans_jax.train`` with ``MODEL_DIR`` = ``model_dir`` and a model config whose weights
    match then continues from these weights with a fresh optimizer state (fine-tuning or further
    pretraining); ``export-hf`` and ``embed`` read the directory too.

    Args:
      hf_dir: the HF folder (config.json + safetensors/bin).
      model_dir: the new training directory; must hold no checkpoint yet.
      family: refuse a model of another family (one of ``model_io.FAMILIES``).
      overwrite: replace a ``model_dir`` that already holds checkpoints (the whole folder, once the
        new checkpoint is complete).

    Returns:
      ``(the loaded model, the checkpoint directory)``.

    Raises:
      FileExistsError: ``model_dir`` already holds checkpoints (and not ``overwrite``).
      CheckpointError: the folder is not a model we read (or not of ``family``).
    """
    model_dir = pathlib.Path(os.path.abspath(model_dir))
    replace = bool(checkpoint_reader.finished_step_dirs(str(model_dir)))
    if replace and not overwrite:
        raise FileExistsError(f"{model_dir}: already holds checkpoints; import into a new directory or pass --overwrite")
    model = load_hf(hf_dir)
    require_family(model, family, hf_dir)
    meta = {
        "params_only": True,
        "model": type(model.config).__name__,
        "model_config": config_io.config_to_dict(model.config),
        "weights_fingerprint": config_io.weights_fingerprint(model.config),
        "architecture": model.architecture,
        "imported_from": str(pathlib.Path(hf_dir).absolute()),
        "imported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "trainable": ARCHITECTURE_OF_CONFIG.get(type(model.config)) == model.architecture,
    }
    if not replace:
        return model, _write_checkpoint(model_dir, model.params, meta)
    with atomic_files.atomic_directory(model_dir, overwrite=True) as tmp:
        _write_checkpoint(tmp, model.params, meta)
    return model, model_dir / "checkpoint_0"


def _write_checkpoint(model_dir: pathlib.Path, params: dict, meta: dict) -> pathlib.Path:
    """Writes step 0 with the trainer's own manager (the layout the trainer resumes from)."""
    from prottrans_jax import checkpoints

    with checkpoints.TrainCheckpointer(str(model_dir), keep=1000, save_every=1, async_save=False) as ckpt:
        ckpt.save(0, {"params": params, "step": 0}, meta, force=True)
        ckpt.wait()
        return pathlib.Path(str(ckpt.step_dir(0)))
