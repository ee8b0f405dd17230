"""Crash-safe, resumable HDF5 output in ProtTrans' embedder layout (one dataset per sequence id).

While a run is going, finished sequences go to small part files in ``OUT.h5.parts/``, each written
to a temporary name and renamed when complete. At the end the parts (and an existing ``OUT.h5``)
are merged into a temporary file that replaces ``OUT.h5`` in one rename. A kill at any moment thus
leaves ``OUT.h5`` as it was (absent, or complete from an earlier run) plus whole part files, which
the next run keeps and skips. A kill leaves at most a ``.NAME.partial-*`` temporary file beside
``OUT.h5`` or in the parts folder; no run reads those, and the next run that finishes removes them.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from prottrans_jax import atomic_files, fasta

# File attributes that must agree for a run to add to an existing output. The weights' fingerprint is compared
# when the output records one (embed versions before it did not): other weights at the same path are refused.
IDENTITY_ATTRS = ("model", "architecture", "step", "layer", "dtype", "storage_dtype", "pooling", "model_fingerprint",
                  "segment_length", "memory_length")
_RECORDED_SINCE = ("model_fingerprint", "segment_length", "memory_length")  # the last two: XLNet, Transformer-XL only
RUN_FILE = "run.json"
# Test-only: 'part_write[:N]' (the write of part N, default 0) or 'finalize' makes the writer stop inside that
# write, with some bytes in its temporary file, print one line to stderr and sleep, so a test can kill it there.
TEST_PAUSE_ENV = "PROTTRANS_JAX_TEST_PAUSE_IN"


def dataset_name(record_id: str) -> str:
    """ProtTrans' key for a sequence: ``/`` and ``.`` (which HDF5 tools misread) become ``_``."""
    return fasta.dataset_name(record_id)  # the rule FASTA validation checks names against


class OutputMismatchError(ValueError):
    """An existing output was written by a different model or setting than this run's."""


class EmbeddingStore:
    """One output file: per-residue ``(L, hidden)`` or per-protein ``(hidden,)`` datasets.

    Args:
      path: the final ``.h5`` file.
      attrs: file attributes identifying the run (model, architecture, step, layer, dtype,
        storage_dtype, pooling, model_fingerprint: :data:`IDENTITY_ATTRS`); an existing output with other values
        is refused.
      flush_bytes, flush_seconds: a part file is written when the buffer holds this much or is this old.
      overwrite: start over: ignore an existing output and its parts, and remove them when the first
        part is written (a run that fails before writing leaves them as they were).
    """

    def __init__(self, path: str | pathlib.Path, attrs: Mapping[str, Any], flush_bytes: int = 64 << 20,
                 flush_seconds: float = 30.0, overwrite: bool = False):
        self.path = pathlib.Path(path).absolute()
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.attrs = {k: _attr_value(v) for k, v in attrs.items()}
        self.flush_bytes, self.flush_seconds = flush_bytes, flush_seconds
        self._buffer: list[tuple[str, np.ndarray, dict]] = []
        self._buffer_bytes, self._last_flush = 0, time.monotonic()
        self._start_over = overwrite
        if not overwrite:
            self._check_existing()
        self.done = {} if overwrite else self._existing_names()

    # -- resume -------------------------------------------------------------------------
    def _check_existing(self) -> None:
        import h5py

        if self.path.exists():
            try:
                with h5py.File(self.path, "r") as f:
                    self._check_attrs(dict(f.attrs), str(self.path))
            except OSError as e:
                raise OutputMismatchError(f"{self.path}: exists but is not a readable HDF5 file ({e}); "
                                          "move it away or choose another --out") from None
        run_file = self.parts_dir / RUN_FILE
        if run_file.exists():
            self._check_attrs(json.loads(run_file.read_text()), str(self.parts_dir))

    def _check_attrs(self, found: Mapping[str, Any], where: str) -> None:
        keys = [k for k in IDENTITY_ATTRS if k in found or k not in _RECORDED_SINCE]
        diffs = [f"{k}: {_attr_value(found.get(k))!r} there vs {self.attrs.get(k)!r} now" for k in keys
                 if _attr_value(found.get(k)) != self.attrs.get(k)]
        if diffs:
            only_weights = [d.split(":")[0] for d in diffs] == ["model_fingerprint"]
            weights = " (other weights at the same model path)" if only_weights else ""
            raise OutputMismatchError(
                f"{where} holds embeddings of another run ({'; '.join(diffs)}){weights}; choose another --out, or "
                "delete it to start over")

    def _existing_names(self) -> dict[str, str]:
        """dataset name -> sequence SHA-1 for everything already written (final file and parts)."""
        import h5py

        names: dict[str, str] = {}
        for file in self._readable_files():
            with h5py.File(file, "r") as f:
                for name, ds in f.items():
                    names[name] = str(ds.attrs.get("sequence_sha1", ""))
        return names

    def _part_files(self) -> list[pathlib.Path]:
        return sorted(self.parts_dir.glob("part_*.h5")) if self.parts_dir.is_dir() else []

    def _readable_files(self) -> list[pathlib.Path]:
        return ([self.path] if self.path.exists() else []) + self._part_files()

    # -- writing ------------------------------------------------------------------------
    def add(self, name: str, embedding: np.ndarray, attrs: Mapping[str, Any]) -> None:
        """Buffers one sequence's embedding (cast to the storage dtype); writes a part when due."""
        array = np.asarray(embedding, self.attrs["storage_dtype"])
        self._buffer.append((name, array, dict(attrs)))
        self._buffer_bytes += array.nbytes
        if self._buffer_bytes >= self.flush_bytes or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Writes the buffer as one new part file (atomically)."""
        import h5py

        if not self._buffer:
            return
        self._remove_old_outputs()
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        run_file = self.parts_dir / RUN_FILE
        if not run_file.exists():
            with atomic_files.atomic_file(run_file) as tmp:
                tmp.write_text(json.dumps(self.attrs, indent=2, sort_keys=True))
        index = len(self._part_files())
        while (self.parts_dir / f"part_{index:06d}.h5").exists():
            index += 1
        with atomic_files.atomic_file(self.parts_dir / f"part_{index:06d}.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                for name, array, attrs in self._buffer:
                    ds = f.create_dataset(name, data=array)
                    ds.attrs.update({k: _attr_value(v) for k, v in attrs.items()})
                    _test_pause(f"part_write:{index}", f, tmp)
        for name, _, attrs in self._buffer:
            self.done[name] = str(attrs.get("sequence_sha1", ""))
        self._buffer, self._buffer_bytes, self._last_flush = [], 0, time.monotonic()

    def _remove_old_outputs(self) -> None:
        """With ``overwrite``: the earlier output and parts go, once (just before this run's first write)."""
        if self._start_over:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            self.path.unlink(missing_ok=True)
            self._start_over = False

    def finalize(self, extra_attrs: Optional[Mapping[str, Any]] = None) -> pathlib.Path:
        """Merges everything into ``path`` (replaced in one rename) and removes the parts."""
        import h5py

        self.flush()
        self._remove_old_outputs()
        parts = self._part_files()
        if not parts and self.path.exists() and not extra_attrs:
            return self.path
        with atomic_files.atomic_file(self.path) as tmp:
            if self.path.exists():
                shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "a") as out:
                for part in parts:
                    with h5py.File(part, "r") as f:
                        for name in f:
                            if name not in out:
                                f.copy(f[name], out, name)
                    _test_pause("finalize", out, tmp)
                out.attrs.update(self.attrs)
                out.attrs.update({k: _attr_value(v) for k, v in (extra_attrs or {}).items()})
                out.attrs["num_sequences"] = len(out)
                out.attrs["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        for stale in self.path.parent.glob(f".{self.path.name}.partial-*"):  # left by killed merges
            stale.unlink(missing_ok=True)
        return self.path


def _test_pause(where: str, h5file, tmp: pathlib.Path) -> None:
    """Test-only, inert unless ``$PROTTRANS_JAX_TEST_PAUSE_IN`` names ``where``: flushes the half-written
    temporary file, says so on stderr and sleeps, for a test to SIGKILL the process mid-write."""
    wanted = os.environ.get(TEST_PAUSE_ENV)
    if not wanted or where not in (wanted, f"{wanted}:0"):
        return
    h5file.flush()
    print(f"{TEST_PAUSE_ENV}: paused in {wanted} writing {tmp}", file=sys.stderr, flush=True)
    time.sleep(600)


def read_ids(path: str | pathlib.Path) -> list[str]:
    """Dataset names of an embedding file."""
    import h5py

    with h5py.File(path, "r") as f:
        return list(f.keys())


def _attr_value(value: Any) -> Any:
    """HDF5-storable attribute values (None -> '', sequences -> JSON); bytes/numpy scalars -> Python."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def skip_done(names: Iterable[str], store_list: list[EmbeddingStore]) -> set[str]:
    """Names that every store already holds."""
    return {n for n in names if all(n in s.done for s in store_list)}
