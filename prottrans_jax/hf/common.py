"""Shared HuggingFace interchange helpers: checkpoint errors, tensor reading/writing, weight-map tables."""

from __future__ import annotations

import contextlib
import dataclasses
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


def save_safetensors(tensors: Mapping[str, np.ndarray], path: str | pathlib.Path, dtype: str = "float32",
                     keep_float32: Iterable[str] = ()) -> None:
    """Writes float tensors as ``dtype`` ('float32', 'float16', 'bfloat16') with torch's format metadata;
    those named in ``keep_float32`` (derived buffers that rounding would distort) stay float32."""
    from safetensors.numpy import save_file

    if dtype not in SAVE_DTYPES:
        raise ValueError(f"dtype {dtype!r} not in {SAVE_DTYPES}")
    if dtype == "bfloat16":
        import ml_dtypes

        np_dtype = ml_dtypes.bfloat16
    else:
        np_dtype = np.dtype(dtype)
    keep = set(keep_float32)
    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32).astype(np.float32 if k in keep else np_dtype))
              for k, v in tensors.items()}
    save_file(arrays, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~_umask())  # safetensors creates its file 0600; give it the mode of the other files


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------
# Table-driven import and export (what every family's map does with its rows).
# ---------------------------------------------------------------------------------------
Row = tuple[str, str, str]  # (HF tensor name, our parameter path, transform)


def module_param_shapes(module) -> dict[str, tuple[int, ...]]:
    """A Linen module's flat parameter shapes from its ``dummy_inputs()``, computed abstractly (nothing allocated)."""
    import jax
    from flax.core import unfreeze

    shapes = jax.eval_shape(lambda rng: module.init(rng, **module.dummy_inputs()), jax.random.key(0))
    return {k: tuple(v.shape) for k, v in flatten_params(unfreeze(shapes["params"])).items()}


def read_table(reader: TensorReader, rows: Iterable[Row], expected: Mapping[str, tuple[int, ...]], context: str,
               names: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Our flat params from expanded table rows, each HF tensor's presence and shape checked before it is read.

    Args:
      reader: the HF folder's tensors.
      rows: expanded rows ``(hf_name, our_path, transform)``.
      expected: our flat parameter shapes (unscanned).
      context: what is being read, for messages (``'XLNetModel(...) from dir/config.json'``).
      names: HF name -> name stored in the file, where they differ (old checkpoints' LayerNorm gamma/beta).

    Raises:
      CheckpointError: a tensor is missing or has another shape, naming the file, the tensor and ``context``.
    """
    stored = {n: n for n in reader.keys()} if names is None else names
    flat = {}
    for hf_name, our_path, transform in rows:
        want = transformed_shape(expected[our_path], transform)
        if hf_name not in stored:
            raise CheckpointError(f"{reader.file_of(hf_name)}: tensor {hf_name!r} is missing "
                                  f"(expected shape {want} for {context})")
        found = reader.shape(stored[hf_name])
        if found != want:
            raise CheckpointError(f"{reader.file_of(stored[hf_name])}: tensor {hf_name!r} has shape {found}, "
                                  f"expected {want} for {context}")
        flat[our_path] = apply_transform(reader.get(stored[hf_name]), transform)
    return flat


def check_tied_copy(reader: TensorReader, name: str, stored: str | None, source: str, source_value: np.ndarray,
                    tie_declared: bool, context: str) -> None:
    """Our output layers are tied to their ``source``: refuses a distinct ``name`` in the file (atol 1e-6).

    Args:
      reader: the HF folder's tensors.
      name: the output layer's HF name; ``stored``: its name in the file, or None when absent.
      source: the HF name it is tied to; ``source_value``: that tensor as HF stores it.
      tie_declared: the config's ``tie_word_embeddings`` (an absent copy is fine only when true).
      context: what is being read, for messages.

    Raises:
      CheckpointError: shapes or values differ, or the file is declared untied but lacks ``name``.
    """
    if stored is None:
        if not tie_declared:
            raise CheckpointError(f"{reader.file_of(name)}: tie_word_embeddings is false but tensor {name!r} is "
                                  f"missing ({context})")
        return
    value = reader.get(stored)
    if value.shape != source_value.shape or not np.allclose(value, source_value, rtol=0, atol=1e-6):
        raise CheckpointError(f"{reader.file_of(stored)}: tensor {name!r} differs from {source!r}; untied output "
                              f"layers are not supported ({context})")


def refuse_leftovers(reader: TensorReader, leftovers: Iterable[str], context: str,
                     names: Mapping[str, str] | None = None) -> None:
    """Refuses tensors that no table row, tied copy or ignored prefix accounts for.

    Raises:
      CheckpointError: naming how many, their file and the first three.
    """
    extra = sorted(leftovers)
    if extra:
        stored = extra[0] if names is None else names[extra[0]]
        raise CheckpointError(f"{reader.file_of(stored)}: {len(extra)} tensor(s) do not belong to {context}, e.g. "
                              f"{extra[:3]}; is the config.json from a different model?")


def export_table(params: Mapping, rows: Iterable[Row], expected: Mapping[str, tuple[int, ...]],
                 describe: str) -> dict[str, np.ndarray]:
    """HF tensors (float32 numpy) from our params, scanned or not (numpy or jax arrays, sharded or not).

    Raises:
      CheckpointError: a parameter a row needs is missing or has another shape than ``expected``.
    """
    import jax
    from flax.core import unfreeze

    from prottrans_jax.models import layers

    flat = flatten_params(layers.unstack_layer_params(unfreeze(params)))
    tensors = {}
    for hf_name, our_path, transform in rows:
        if our_path not in flat:
            raise CheckpointError(f"params: {our_path!r} is missing (needed for {hf_name!r}, {describe})")
        value = np.asarray(jax.device_get(flat[our_path]), np.float32)
        if value.shape != expected[our_path]:
            raise CheckpointError(f"params: {our_path!r} has shape {value.shape}, expected {expected[our_path]} "
                                  f"for {describe}")
        tensors[hf_name] = apply_transform(value, transform)
    return tensors


def write_hf_folder(out_dir: str | pathlib.Path, tensors: Mapping[str, np.ndarray], hf_config: Mapping[str, Any],
                    dtype: str = "float32", keep_float32: Iterable[str] = ()) -> pathlib.Path:
    """Writes ``model.safetensors`` (as ``dtype``, ``keep_float32`` names as float32) and ``config.json`` into
    ``out_dir`` (created); returns it."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(tensors, out / SAFETENSORS, dtype, keep_float32)
    (out / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return out


def nest_params(flat: Mapping[str, Any], scan_layers: bool) -> dict:
    """Flat unscanned params -> the nested tree a module with (``scan_layers``) or without scan expects."""
    params = unflatten_params(flat)
    if scan_layers:
        from prottrans_jax.models import layers

        params = layers.stack_layer_params(params)
    return params


@dataclasses.dataclass(frozen=True)
class PrefixedFamilies:
    """An LM-head model whose backbone tensors sit under ``transformer.``, and its bare backbone, whose
    tensors may or may not (XLNet, Transformer-XL): tables, shapes, which one a folder holds.

    Attributes:
      name: the family in words, for messages ('XLNet').
      lm_head: HF class of the LM-head model ('XLNetLMHeadModel').
      backbone: HF class of the bare model ('XLNetModel').
      modules: HF class -> (our module class, its table: ``{base}`` and ``{i}`` unexpanded).
    """

    name: str
    lm_head: str
    backbone: str
    modules: Mapping[str, tuple[type, tuple[Row, ...]]]

    def module(self, family: str) -> type:
        """Our module class for ``family``.

        Raises:
          ValueError: ``family`` is not one of ours.
        """
        if family not in self.modules:
            raise ValueError(f"unknown {self.name} family {family!r}; expected one of {sorted(self.modules)}")
        return self.modules[family][0]

    def expected_shapes(self, family: str, config) -> dict[str, tuple[int, ...]]:
        """Our flat parameter shapes (unscanned) for ``family``, computed abstractly from the module."""
        return module_param_shapes(self.module(family)(config.replace(scan_layers=False, remat_policy="none")))

    def rows(self, family: str, config, base: str | None = None) -> list[Row]:
        """Expanded rows ``[(hf_name, our_path, transform), ...]`` whose parameter ``config`` has.

        Args:
          family: ``lm_head`` or ``backbone``.
          config: our config (``n_layer`` and whatever decides which parameters exist).
          base: backbone prefix; default 'transformer.' for the LM head and '' for the bare model.
        """
        expected = self.expected_shapes(family, config)
        base = self.default_base(family) if base is None else base
        rows = self.modules[family][1]
        rows = expand_rows(((hf.replace("{base}", base), ours, t) for hf, ours, t in rows), config.n_layer)
        return [r for r in rows if r[1] in expected]

    def default_base(self, family: str) -> str:
        """The prefix ``export`` writes: 'transformer.' for the LM head, '' for the bare model."""
        return "transformer." if family == self.lm_head else ""

    def resolve(self, hf_config: Mapping[str, Any], family: str | None = None) -> str:
        """``family`` when given (checked), else the LM head when the file declares it, else the backbone."""
        if family is not None:
            self.module(family)
            return family
        declared = (hf_config.get("architectures") or [None])[0]
        return self.lm_head if declared == self.lm_head else self.backbone

    def base_of(self, reader: TensorReader, family: str) -> str:
        """The prefix a folder uses ('transformer.' or '').

        Raises:
          CheckpointError: an LM head is asked for but the file has no 'transformer.*' tensors.
        """
        base = "transformer." if any(n.startswith("transformer.") for n in reader.keys()) else ""
        if family == self.lm_head and not base:
            raise CheckpointError(f"{reader.file_of('transformer.')}: no 'transformer.*' tensors, so no "
                                  f"{self.lm_head}; import it as family {self.backbone!r}")
        return base

    def refuse_unknown(self, reader: TensorReader, family: str, base: str, known: set[str], context: str) -> None:
        """Refuses tensors outside ``known``; a bare model reads the backbone of any head's file (head ignored)."""
        refuse_leftovers(reader, (n for n in set(reader.keys()) - known
                                  if family == self.lm_head or n.startswith(base)), context)
