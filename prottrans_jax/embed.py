"""``prottrans-jax embed``: FASTA -> HDF5 embeddings (per residue and/or per protein), resumable, at proteome scale.

Layout as ProtTrans' embedder: one dataset per sequence, named by the record id with ``/`` and ``.``
replaced by ``_``; ``(L, hidden)`` per residue (special tokens dropped), ``(hidden,)`` per protein
(the mean over residues). File attributes name the model, step, layer and dtypes; each dataset
carries ``original_id``, ``length`` and ``sequence_sha1``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import pathlib
import time
from typing import Any, Optional, Sequence

import numpy as np

from prottrans_jax import fasta, model_io
from prottrans_jax.embedding import batching, h5_store, limits

LONG_POLICIES = ("error", "skip", "chunk")
STORAGE_DTYPE = {"float32": "float32", "bfloat16": "float16", "float16": "float16"}


@dataclasses.dataclass
class EmbedSummary:
    """What a run did."""

    outputs: dict[str, str]
    embedded: int
    already_done: int
    skipped_too_long: list[str]
    chunked: list[str]
    residues: int
    seconds: float
    compiled_shapes: int

    @property
    def residues_per_second(self) -> float:
        return self.residues / self.seconds if self.seconds > 0 else float("nan")


class EmbedInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`embed_fasta`, raised once what was finished is saved; ``str()`` says what and how to resume."""


@dataclasses.dataclass
class _Record:
    name: str  # dataset name
    header_id: str
    sequence: str
    sha1: str


@dataclasses.dataclass(frozen=True)
class _Unit:
    """One encoder input: a whole sequence or one window of a long one."""

    record: int
    start: int
    end: int
    keep_start: int
    keep_end: int


def output_paths(out: str | pathlib.Path, per_residue: bool, per_protein: bool) -> dict[str, pathlib.Path]:
    """``{'per_residue': path, 'per_protein': path}``; with both, per-protein goes to ``<stem>.per_protein.h5``."""
    out = pathlib.Path(out)
    if per_residue and per_protein:
        return {"per_residue": out, "per_protein": out.with_name(f"{out.stem}.per_protein{out.suffix or '.h5'}")}
    return {"per_residue" if per_residue else "per_protein": out}


def read_records(fasta_paths, full_header_ids: bool = False) -> list[_Record]:
    """Every record, validated by the rules ``validate-fasta`` applies (:func:`fasta.validated_records`).

    Raises:
      fasta.FastaError: malformed input, no records, an empty sequence, or two records with the same name
        (also after ProtTrans' renaming).
    """
    records = []
    for rec in fasta.validated_records(fasta_paths, full_header_ids=full_header_ids):
        header_id = fasta.record_name(rec, full_header_ids)
        records.append(_Record(fasta.dataset_name(header_id), header_id, rec.sequence,
                               hashlib.sha1(rec.sequence.encode()).hexdigest()))
    return records


def plan_units(records: Sequence[_Record], max_length: int, policy: str, overlap: int):
    """Encoder inputs for the records; ``(units, skipped names, chunked names)``.

    Raises:
      ValueError: with policy 'error', when a sequence is longer than ``max_length`` (listing them).
    """
    too_long = [r for r in records if len(r.sequence) > max_length]
    if too_long and policy == "error":
        shown = ", ".join(f"{r.header_id} ({len(r.sequence)})" for r in too_long[:5])
        raise ValueError(
            f"{len(too_long)} sequence(s) are longer than the maximum length {max_length} residues: {shown}"
            f"{' ...' if len(too_long) > 5 else ''}. Rerun with --long-sequences skip (leave them out) or chunk "
            "(embed overlapping windows and join them), or raise --max-length if memory allows")
    units, skipped, chunked = [], [], []
    for i, r in enumerate(records):
        if len(r.sequence) <= max_length:
            units.append(_Unit(i, 0, len(r.sequence), 0, len(r.sequence)))
        elif policy == "skip":
            skipped.append(r.name)
        else:
            chunked.append(r.name)
            units.extend(_Unit(i, *w) for w in limits.windows(len(r.sequence), max_length, overlap))
    return units, skipped, chunked


def default_max_length(embedder, dtype_bytes: int, available: Optional[int] = None) -> int:
    """The longest sequence (residues) whose :func:`limits.peak_bytes` fits in 80% of ``available`` bytes
    (default: :func:`limits.available_memory_bytes`), and the model's positions."""
    available = limits.available_memory_bytes() if available is None else available
    rows = embedder.rows_per_memory(embedder.num_devices)  # a batch has at least one row per device
    tokens = limits.max_tokens_for_memory(embedder.config, available, dtype_bytes, rows=rows)
    if embedder.max_positions:
        tokens = min(tokens, embedder.max_positions)
    return max(1, tokens - embedder.special_tokens)


def embed_fasta(
    model: str | pathlib.Path | model_io.LoadedModel,
    fasta_paths,
    out: str | pathlib.Path,
    *,
    per_residue: bool = False,
    per_protein: bool = True,
    layer: Optional[int] = None,
    dtype: str = "float32",
    max_residues_per_batch: int = 4000,
    max_sequences_per_batch: int = 100,
    max_length: Optional[int] = None,
    long_sequences: str = "error",
    chunk_overlap: int = 256,
    step: Optional[int] = None,
    config_name: Optional[str] = None,
    family: Optional[str] = None,
    full_header_ids: bool = False,
    devices: Optional[Sequence[Any]] = None,
    progress: bool = True,
    save_every_seconds: float = 30.0,
    overwrite: bool = False,
    segment_length: Optional[int] = None,
    memory_length: Optional[int] = None,
) -> EmbedSummary:
    """Embeds every sequence of ``fasta_paths`` into HDF5 (see the module docstring for the layout).

    Re-running with the same ``out`` skips sequences already written (by a finished or a killed run).

    Args:
      model: a model directory (ours or t5x's), a checkpoint folder, a HF folder, or a loaded model.
      fasta_paths: FASTA path(s) or glob(s), plain or gzip.
      out: the ``.h5`` file.
      per_residue, per_protein: what to write (both: per-protein into ``<stem>.per_protein.h5``).
      layer: HF ``hidden_states`` index (0 embeddings ... n final output; default the final output).
      dtype: compute dtype 'float32', 'bfloat16' or 'float16' (half precision is stored as float16).
      max_residues_per_batch: padded tokens per batch (ProtTrans: 4000).
      max_sequences_per_batch: sequences per batch at most (ProtTrans: 100).
      max_length: longest sequence embedded whole (default: what 80% of the free memory holds; XLNet and
        Transformer-XL: no limit, longer proteins run as segments with memory).
      long_sequences: 'error' (refuse before any work), 'skip' (leave out, listed in the file's
        ``skipped_too_long`` attribute) or 'chunk' (overlapping windows of ``max_length``, joined).
      chunk_overlap: residues shared by neighbouring windows.
      step, config_name, family: see :func:`prottrans_jax.model_io.load_model`.
      full_header_ids: name datasets by the whole header line (ProtTrans' embedder) not its first word.
      devices: devices to split batches over (default all local devices).
      progress: show a progress bar.
      save_every_seconds: finished sequences are written at least this often (the most work a kill loses).
      overwrite: start over: the existing outputs (and their parts) are removed when the first new
        embeddings are written, instead of resumed from (or refused when they do not match).
      segment_length: XLNet and Transformer-XL only: tokens per segment (default 512); a longer protein runs
        as consecutive segments, each attending to the memory of the ones before (see ``embedding.recurrent``).
      memory_length: XLNet and Transformer-XL only: memory positions carried between segments (default the
        model's ``mem_len``, else 512).

    Raises:
      EmbedInterrupted: on Ctrl-C, after saving what was finished (its message says how much, and where).
    """
    if not (per_residue or per_protein):
        raise ValueError("nothing to write: pass --per-residue and/or --per-protein")
    if long_sequences not in LONG_POLICIES:
        raise ValueError(f"long_sequences {long_sequences!r} not in {LONG_POLICIES}")
    records = read_records(fasta_paths, full_header_ids)
    stores: dict[str, h5_store.EmbeddingStore] = {}
    with _saved_on_interrupt(records, stores):
        loaded = model if isinstance(model, model_io.LoadedModel) else model_io.load_model(
            model, step=step, config_name=config_name, family=family)
        from prottrans_jax.embedding.encoder import Embedder

        embedder = Embedder(loaded, layer=layer, dtype=dtype, devices=devices, segment_length=segment_length,
                            memory_length=memory_length)
        attrs = _file_attrs(loaded, embedder, dtype)
        if not isinstance(model, model_io.LoadedModel):
            loaded.params = None  # the embedder holds the weights on the devices; free the host copy
        stores.update({kind: h5_store.EmbeddingStore(path, dict(attrs, pooling=kind), flush_seconds=save_every_seconds,
                                                     overwrite=overwrite)
                       for kind, path in output_paths(out, per_residue, per_protein).items()})
        _check_sequences_unchanged(records, stores.values())
        dtype_bytes = 4 if dtype == "float32" else 2
        if embedder.segment_length:  # memory instead of a length limit
            _check_segment_fits(embedder, dtype_bytes)
            limit = max_length or max(len(r.sequence) for r in records)
        else:
            limit = max_length or default_max_length(embedder, dtype_bytes)
        if embedder.max_positions and limit + embedder.special_tokens > embedder.max_positions:
            raise ValueError(f"--max-length {limit}: the model has {embedder.max_positions} positions, so at most "
                             f"{embedder.max_positions - embedder.special_tokens} residues per sequence")
        done = h5_store.skip_done([r.name for r in records], list(stores.values()))
        todo = [r for r in records if r.name not in done]
        units, skipped, chunked = plan_units(todo, limit, long_sequences, min(chunk_overlap, limit // 2))
        plan = plan_batches(embedder, units, limit, max_residues_per_batch, max_sequences_per_batch, dtype_bytes)
        t0 = time.perf_counter()
        residues, shapes = _run(embedder, todo, units, plan, stores, progress)
        seconds = time.perf_counter() - t0
        extra = {"skipped_too_long": skipped, "chunked": chunked, "max_length": limit} if (skipped or chunked) else {}
        paths = {kind: str(store.finalize(extra)) for kind, store in stores.items()}
    return EmbedSummary(paths, len(todo) - len(skipped), len(done), skipped, chunked, residues, seconds, shapes)


def _file_attrs(loaded: model_io.LoadedModel, embedder, dtype: str) -> dict[str, Any]:
    """What identifies a run in its files (a resumed run must agree), and its model's weight fingerprint."""
    attrs = dict(model=str(pathlib.Path(loaded.source).absolute()), architecture=loaded.architecture,
                 step=loaded.step, layer=embedder.layer, dtype=dtype, storage_dtype=STORAGE_DTYPE[dtype],
                 hidden_size=embedder.hidden_size, model_fingerprint=model_io.encoder_fingerprint(loaded),
                 prottrans_jax_version=_version())
    if embedder.segment_length:
        attrs.update(segment_length=embedder.segment_length, memory_length=embedder.memory_length)
    return attrs


def _check_segment_fits(embedder, dtype_bytes: int) -> None:
    """Refuses a segment whose queries x (segment + memory) keys need more than 80% of the free memory."""
    segment, memory = embedder.segment_length, embedder.memory_length
    rows = embedder.rows_per_memory(embedder.num_devices)
    need = limits.peak_bytes(embedder.config, segment + 1, dtype_bytes, rows, segment, memory)
    available = limits.available_memory_bytes()
    if need > 0.8 * available:
        raise ValueError(f"--segment-length {segment} with --mem-len {memory}: one segment needs about "
                         f"{need / 1e9:.1f} GB, more than 80% of the {available / 1e9:.1f} GB free; lower either")


@contextlib.contextmanager
def _saved_on_interrupt(records: Sequence[_Record], stores: dict[str, h5_store.EmbeddingStore]):
    """Turns Ctrl-C into :class:`EmbedInterrupted`, whose message says what is saved and how to resume."""
    try:
        yield
    except KeyboardInterrupt:
        saved = len(h5_store.skip_done([r.name for r in records], list(stores.values()))) if stores else 0
        if not saved:
            raise EmbedInterrupted("interrupted before any sequence was saved; run the same command again to "
                                   "start") from None
        where = ", ".join(str(p) for store in stores.values() for p in (store.path, store.parts_dir) if p.exists())
        raise EmbedInterrupted(f"interrupted: {saved} of {len(records)} sequence(s) are saved (in {where}); run "
                               "the same command again to resume from there") from None


def plan_batches(embedder, units: Sequence[_Unit], limit: int, max_tokens: int, max_rows: int,
                 dtype_bytes: int) -> list[batching.Batch]:
    """Batches of ``units`` that need no more memory than one sequence of ``limit`` residues.

    Buckets stop at ``limit`` (a window is never padded past the length the memory bound was taken at),
    and a batch has no more rows than that bound allows at its padded length.
    """
    if not units:
        return []
    extra = embedder.special_tokens
    lengths = [u.end - u.start + extra for u in units]
    segments = dict(segment=embedder.segment_length, memory=embedder.memory_length or 0)
    if embedder.segment_length:  # rows past one segment are whole numbers of segments
        edges = batching.segment_bucket_edges(max(lengths), embedder.segment_length)
        top = edges[-1]
    else:
        top = limit + extra if not embedder.max_positions else min(limit + extra, embedder.max_positions)
        edges = batching.bucket_edges(max(lengths), limit=top)
    budget = limits.peak_bytes(embedder.config, top, dtype_bytes, embedder.rows_per_memory(embedder.num_devices),
                               **segments)

    def row_cap(padded: int) -> int:
        rows = limits.max_rows_for_memory(embedder.config, padded, budget, dtype_bytes, **segments)
        return rows * embedder.memory_pools

    return batching.plan_batches(lengths, max_tokens=max_tokens, max_rows=max_rows, row_multiple=embedder.num_devices,
                                 edges=edges, row_cap=row_cap)


def _run(embedder, records, units, plan, stores, progress) -> tuple[int, int]:
    """Embeds ``units`` batch by batch (``plan``), joining windows, writing each finished record to every store."""
    from tqdm.auto import tqdm

    need_residues = "per_residue" in stores
    pieces: dict[int, list[tuple[_Unit, np.ndarray]]] = {}
    windows_left = {}
    for u in units:
        windows_left[u.record] = windows_left.get(u.record, 0) + 1
    total = sum(u.end - u.start for u in units)
    bar = tqdm(total=total, unit="res", unit_scale=True, desc="embedding", disable=not progress, smoothing=0.05)
    shapes = set()
    try:
        for batch in plan:
            batch_units = [units[i] for i in batch.indices]
            seqs = [records[u.record].sequence[u.start:u.end] for u in batch_units]
            whole = [windows_left[u.record] == 1 and u.start == 0 and u.end == len(records[u.record].sequence)
                     for u in batch_units]
            per_res, pooled = embedder.embed(seqs, batch.rows, batch.padded_length,
                                             per_residue=need_residues or not all(whole))
            shapes.add((batch.rows, batch.padded_length))
            for j, u in enumerate(batch_units):
                record = records[u.record]
                if whole[j]:
                    _write(stores, record, None if per_res is None else per_res[j], pooled[j])
                    continue
                pieces.setdefault(u.record, []).append((u, per_res[j][u.keep_start - u.start:u.keep_end - u.start]))
                if len(pieces[u.record]) == windows_left[u.record]:
                    joined = np.concatenate([a for _, a in sorted(pieces.pop(u.record), key=lambda p: p[0].start)])
                    _write(stores, record, joined, joined.astype(np.float32).mean(axis=0))
            bar.update(sum(len(s) for s in seqs))
    finally:
        bar.close()
        for store in stores.values():
            store.flush()  # keep what is finished, even when interrupted
    return total, len(shapes)


def _write(stores, record: _Record, per_residue: Optional[np.ndarray], pooled: np.ndarray) -> None:
    attrs = {"original_id": record.header_id, "length": len(record.sequence), "sequence_sha1": record.sha1}
    if "per_residue" in stores:
        stores["per_residue"].add(record.name, per_residue, attrs)
    if "per_protein" in stores:
        stores["per_protein"].add(record.name, pooled, attrs)


def _check_sequences_unchanged(records: Sequence[_Record], stores) -> None:
    for store in stores:
        for r in records:
            saved = store.done.get(r.name)
            if saved and saved != r.sha1:
                raise h5_store.OutputMismatchError(
                    f"{store.path}: holds {r.name!r} for a different sequence than the FASTA's now; "
                    "choose another --out, or delete it to start over")


def _version() -> str:
    from prottrans_jax import __version__

    return __version__
