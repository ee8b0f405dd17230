"""Shared HuggingFace interchange helpers: checkpoint errors, tensor reading/writing, weight-map tables."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# Transforms named in weight-map tables (torch -> ours; each is its own inverse).
IDENTITY = "identity"
TRANSPOSE = "transpose"  # torch Linear.weight [out, in] <-> Flax kernel [in, out]; also [buckets, heads] tables
TRANSFORMS = (IDENTITY, TRANSPOSE)

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
SAVE_DTYPES = ("float32", "float16", "bfloat16")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the requested model: wrong family, missing tensor or shape mismatch."""


def read_config_json(hf_dir: str | pathlib.Path) -> tuple[pathlib.Path, dict]:
    """Reads ``hf_dir/config.json``.

    Returns:
      ``(path, config dict)``.

    Raises:
      CheckpointError: if the folder or file is missing or not valid JSON.
    """
    path = pathlib.Path(hf_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: no config.json; point to a HuggingFace model folder (config.json + weights)")
    try:
        return path, json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def expand_rows(rows: Iterable[tuple[str, str, str]], num_layers: int) -> list[tuple[str, str, str]]:
    """Expands ``{i}`` in table rows for layers ``0..num_layers-1`` (rows without ``{i}`` kept once)."""
    out = []
    for hf_name, our_path, transform in rows:
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r} in weight-map row {hf_name!r}")
        if "{i}" in hf_name or "{i}" in our_path:
            out.extend((hf_name.format(i=i), our_path.format(i=i), transform) for i in range(num_layers))
        else:
            out.append((hf_name, our_path, transform))
    return out


def apply_transform(x: np.ndarray, transform: str) -> np.ndarray:
    """Applies a table transform (both directions: transposition is its own inverse)."""
    return np.ascontiguousarray(x.T) if transform == TRANSPOSE else x


def transformed_shape(shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    """The shape a table transform produces from ``shape``."""
    return tuple(reversed(shape)) if transform == TRANSPOSE else tuple(shape)


def flatten_params(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested params -> ``{'a/b/kernel': array}``."""
    flat = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten_params(v, path + "/"))
        else:
            flat[path] = v
    return flat


def unflatten_params(flat: Mapping[str, Any]) -> dict:
    """``{'a/b/kernel': array}`` -> nested dicts."""
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


@contextlib.contextmanager
def _unreadable(path: pathlib.Path):
    """Turns a weights-file reader's failure (truncated, corrupt, not the format) into one CheckpointError."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:  # safetensors' and torch's errors have no common base class
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(
            f"{path}: cannot read the weights ({type(e).__name__}: {str(e).strip()[:200]}; file size {size:,} "
            "bytes); the file is truncated or corrupt: copy, download or export it again") from None


class TensorReader:
    """Reads named tensors from a HF folder (``model.safetensors``, a sharded index, or ``pytorch_model.bin``).

    Tensors are read one at a time (safetensors are memory-mapped), shapes without reading data.
    """

    def __init__(self, hf_dir: str | pathlib.Path):
        self.dir = pathlib.Path(hf_dir)
        self._files: dict[str, pathlib.Path] = {}  # tensor name -> file
        self._torch_state: dict | None = None
        if (self.dir / SAFETENSORS).is_file():
            self._index_safetensors([self.dir / SAFETENSORS])
        elif (self.dir / SAFETENSORS_INDEX).is_file():
            index = self.dir / SAFETENSORS_INDEX
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: not a safetensors index (no valid 'weight_map': {e})") from None
            self._index_safetensors(sorted({self.dir / f for f in weight_map.values()}))
        elif (self.dir / PYTORCH_BIN).is_file():
            import torch  # only for legacy checkpoints

            with _unreadable(self.dir / PYTORCH_BIN):
                self._torch_state = torch.load(self.dir / PYTORCH_BIN, map_location="cpu", weights_only=True)
            self._files = {k: self.dir / PYTORCH_BIN for k in self._torch_state}
        else:
            raise CheckpointError(
                f"{self.dir}: no weights found; expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_BIN}"
            )

    def _index_safetensors(self, files: list[pathlib.Path]) -> None:
        from safetensors import safe_open

        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{f}: missing (named in {SAFETENSORS_INDEX}); the folder is incomplete")
            with _unreadable(f), safe_open(str(f), framework="np") as handle:
                for k in handle.keys():
                    self._files[k] = f

    def keys(self) -> list[str]:
        """All tensor names."""
        return list(self._files)

    def file_of(self, name: str) -> pathlib.Path:
        """The file holding ``name`` (or the main weights file when absent), for messages."""
        if name in self._files:
            return self._files[name]
        return next(iter(self._files.values()), self.dir)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of a tensor without reading it."""
        if self._torch_state is not None:
            return tuple(self._torch_state[name].shape)
        from safetensors import safe_open

        with _unreadable(self._files[name]), safe_open(str(self._files[name]), framework="np") as handle:
            return tuple(handle.get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 numpy (bf16/fp16 upcast)."""
        if self._torch_state is not None:
            return self._torch_state[name].float().numpy()
        from safetensors import safe_open

        with _unreadable(self._files[name]), safe_open(str(self._files[name]), framework="np") as handle:
            return np.asarray(handle.get_tensor(name)).astype(np.float32)


def save_safetensors(tensors: Mapping[str, np.ndarray], path: str | pathlib.Path, dtype: str = "float32") -> None:
    """Writes float tensors as ``dtype`` ('float32', 'float16', 'bfloat16') with torch's format metadata."""
    from safetensors.numpy import save_file

    if dtype not in SAVE_DTYPES:
        raise ValueError(f"dtype {dtype!r} not in {SAVE_DTYPES}")
    if dtype == "bfloat16":
        import ml_dtypes

        np_dtype = ml_dtypes.bfloat16
    else:
        np_dtype = np.dtype(dtype)
    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32).astype(np_dtype)) for k, v in tensors.items()}
    save_file(arrays, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~_umask())  # safetensors creates its file 0600; give it the mode of the other files


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
