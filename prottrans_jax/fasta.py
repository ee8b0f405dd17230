"""TF-free streaming FASTA reader and validator (plain or gzip, local paths, globs, gs:// URLs)."""

from __future__ import annotations

import contextlib
import dataclasses
import glob as globlib
import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from typing import Union

from prottrans_jax.alphabet import ACCEPTED_LETTERS, DROPPED_CHARACTERS, RARE_TO_X

PathLike = Union[str, os.PathLike]
Paths = Union[PathLike, Sequence[PathLike]]

_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
_GLOB_MAGIC = re.compile(r"[*?[]")
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_BAD = b"\x00"  # Every invalid byte is translated to this marker, so one `in` test finds them.
_FIX_RESIDUE = "residues must be letters A-Z ('-', '.', '*' and whitespace are ignored): remove or replace it"


class FastaError(ValueError):
    """A FASTA input problem a user can fix, located by file, line and record id.

    Attributes:
      path: the file (or glob pattern) concerned.
      line: 1-based line number, or None when the problem is not on one line.
      record_id: id of the record concerned, or None.
      column: 1-based column of an invalid character, or None.
    """

    def __init__(self, problem: str, fix: str, path: PathLike | None = None, line: int | None = None,
                 record_id: str | None = None, column: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.line, self.record_id, self.column = line, record_id, column
        where = [self.path or "<input>"]
        where += [f"line {line}"] if line is not None else []
        where += [f"column {column}"] if column is not None else []
        where += [f"record {record_id!r}"] if record_id is not None else []
        super().__init__(f"{', '.join(where)}: {problem}. Fix: {fix}.")


@dataclasses.dataclass(frozen=True, slots=True)
class FastaRecord:
    """One FASTA record.

    Attributes:
      id: first whitespace-separated word of the header.
      description: the rest of the header (may be empty).
      sequence: the residues (normalised with the rule of ``alphabet.py`` unless ``normalize=False``).
      path: the file the record came from.
      line: 1-based line number of its header.
    """

    id: str
    description: str
    sequence: str
    path: str
    line: int


def _byte_tables() -> tuple[bytes, bytes, bytes, bytes, re.Pattern]:
    """bytes.translate tables (normalising and raw) and the regex that finds invalid bytes."""
    accepted = set(ACCEPTED_LETTERS) | {c.lower() for c in ACCEPTED_LETTERS}
    norm, raw = bytearray(_BAD * 256), bytearray(_BAD * 256)
    for c in accepted:
        norm[ord(c)] = ord(RARE_TO_X.get(c.upper(), c.upper()))
        raw[ord(c)] = ord(c)
    for c in DROPPED_CHARACTERS:
        raw[ord(c)] = ord(c)
    ok = re.escape("".join(sorted(accepted)) + DROPPED_CHARACTERS).encode()
    whitespace = "".join(c for c in DROPPED_CHARACTERS if c.isspace()).encode()  # Raw mode drops only these.
    return bytes(norm), DROPPED_CHARACTERS.encode(), bytes(raw), whitespace, re.compile(b"[^" + ok + b"]")


_NORM_TABLE, _NORM_DELETE, _RAW_TABLE, _RAW_DELETE, _INVALID_RE = _byte_tables()


def _is_url(path: str) -> bool:
    return _URL_RE.match(path) is not None


def _tf():
    """tensorflow, imported lazily: only gs:// and other URL paths need it."""
    try:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise FastaError("reading URL paths needs TensorFlow's gfile", "pip install tensorflow, "
                         "or copy the files to a local disk") from e
    return tf


def expand_paths(paths: Paths) -> list[str]:
    """Expands a path, a glob pattern, or a list of either into a list of files.

    Args:
      paths: a path or glob (local or a URL such as ``gs://bucket/uniref50_*.fasta.gz``), or a list
        of them. A path that exists is taken literally even if it contains glob characters.

    Returns:
      The files: each glob's matches in sorted order, a list's entries in their own order.

    Raises:
      FastaError: for a glob that matches nothing or a plain path that does not exist.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise FastaError("no input files were given", "pass a FASTA path or a glob pattern")
    out: list[str] = []
    for item in map(os.fspath, items):
        url = _is_url(item)
        exists = _tf().io.gfile.exists if url else os.path.exists
        if _GLOB_MAGIC.search(item) and not exists(item):
            matches = sorted(_tf().io.gfile.glob(item) if url else globlib.glob(item))
            if not matches:
                raise FastaError("glob pattern matches no files", "check the directory and the pattern", item)
            out.extend(matches)
        elif not exists(item):
            raise FastaError("file not found", "check the path (and the mounted disk or bucket)", item)
        else:
            out.append(item)
    return out


def _open_binary(path: str, stack: contextlib.ExitStack):
    """Opens a file for binary reading (closed by ``stack``), decompressing it if it starts with gzip's magic bytes."""
    try:
        raw = stack.enter_context(_tf().io.gfile.GFile(path, "rb") if _is_url(path) else open(path, "rb"))
        magic = raw.read(2)
        raw.seek(0)
        f = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")) if magic == _GZIP_MAGIC else raw
        if f.read(3) != _UTF8_BOM:  # A byte-order mark, as some Windows editors write, is not data.
            f.seek(0)
        return f
    except FastaError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise _open_error(path, e) from e


_OPEN_ERRORS = (  # (exception, problem, fix), first match wins.
    (FileNotFoundError, "file not found", "check the path"),
    (IsADirectoryError, "is a directory, not a FASTA file", "give a file, or a glob such as DIR/*.fasta.gz"),
    (PermissionError, "permission denied", "make the file readable (chmod, ownership)"),
    ((EOFError, zlib.error, gzip.BadGzipFile), "corrupt or truncated gzip", "download or compress it again"),
    (Exception, "cannot open", "check that the file exists and is readable"),
)


def _open_error(path: str, e: Exception) -> FastaError:
    """The FastaError for an exception raised while opening ``path``."""
    problem, fix = next((p, f) for kind, p, f in _OPEN_ERRORS if isinstance(e, kind))
    return FastaError(f"{problem} ({type(e).__name__}: {e})", fix, path)


def _decode_header(line: bytes, path: str, lineno: int) -> tuple[str, str]:
    """A header line without its '>', b'id description', -> (id, description)."""
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise FastaError("header is not UTF-8 text (binary data?)",
                         "check that this is a FASTA text file, not a binary or corrupt one", path, lineno) from e
    parts = text.split(None, 1)
    if not parts:
        raise FastaError("header has no record id", "write the id right after '>' (e.g. '>P12345 description')",
                         path, lineno)
    return parts[0], parts[1] if len(parts) > 1 else ""


def _line_blocks(f, block_size: int = 1 << 20) -> Iterator[bytes]:
    """Yields a binary file's content in blocks of whole lines (only the last may lack its newline).

    A line longer than a block (a 40,000-residue protein on one line) is carried over in pieces.
    """
    pending: list[bytes] = []
    while data := f.read(block_size):
        cut = data.rfind(b"\n") + 1
        if not cut:
            pending.append(data)
            continue
        pending.append(data[:cut])
        yield b"".join(pending)
        pending = [data[cut:]]
    tail = b"".join(pending)
    if tail:
        yield tail


_COMMENT = re.compile(rb"^;[^\n]*", re.M)


def _parse_file(path: str, normalize: bool, max_length: float) -> Iterator[FastaRecord]:
    """Yields the records of one file, validating it.

    The file is read in blocks of whole lines; a block is split into records at each "\\n>", and a
    record's sequence lines are normalised and validated by one bytes.translate call. Lines are
    only looked at one by one when that finds something unusual (a comment or a bad character).
    """
    table, delete = (_NORM_TABLE, _NORM_DELETE) if normalize else (_RAW_TABLE, _RAW_DELETE)
    rid, desc, start, chunks, n, lineno = None, "", 0, [], 0, 1  # lineno: the line being read.
    read_errors = (OSError, EOFError, zlib.error) + ((_tf().errors.OpError,) if _is_url(path) else ())
    with contextlib.ExitStack() as stack:
        f = _open_binary(path, stack)
        try:
            for block in _line_blocks(f):
                parts = block.split(b"\n>")
                if block[:1] == b">":
                    parts[0] = parts[0][1:]
                else:  # The lines before the block's first header continue the current record.
                    head = parts.pop(0)
                    seq = head.translate(table, delete)
                    if _BAD in seq or rid is None:
                        seq = _unusual_lines(head, table, delete, path, lineno, rid)
                    chunks.append(seq)
                    n += len(seq)
                    if n > max_length:
                        raise _too_long(max_length, path, start, rid)
                    lineno += head.count(b"\n") + 1  # + 1: the newline the split removed.
                for part in parts:  # One record per part: this loop is the hot path.
                    if rid is not None:
                        yield _record(rid, desc, chunks, path, start)
                    end = part.find(b"\n") % (len(part) + 1)  # The header's end (len(part) if no newline).
                    (rid, desc), start, body = _decode_header(part[:end], path, lineno), lineno, part[end:]
                    seq = body.translate(table, delete)
                    if _BAD in seq:
                        seq = _unusual_lines(body, table, delete, path, lineno, rid)
                    chunks, n = [seq], len(seq)
                    if n > max_length:
                        raise _too_long(max_length, path, start, rid)
                    lineno += body.count(b"\n") + 1
                lineno -= 1  # No newline was removed after the last part.
        except read_errors as e:
            where = f"after line {lineno - 1}" if lineno > 1 else "at the start"
            raise FastaError(f"corrupt, truncated or unreadable data {where} ({type(e).__name__}: {e})",
                             "download or decompress the file again", path, lineno, rid) from e
    if rid is not None:
        yield _record(rid, desc, chunks, path, start)


def _unusual_lines(raw: bytes, table: bytes, delete: bytes, path: str, lineno: int, rid: str | None) -> bytes:
    """The slow path for sequence lines (``raw`` starts on line ``lineno``): drops ';' comment lines,
    then raises for what is still wrong, or returns the residues."""
    # Emptying comment lines in place keeps the line and column numbers of the others.
    raw = _COMMENT.sub(b"", raw) if b";" in raw else raw
    if rid is None:
        if raw.strip():
            text = raw.isascii() and b"\0" not in raw
            raise _error_at(raw, None, "sequence data before the first '>' header" if text else "binary data: "
                            "this is not a FASTA text file", "start the file with a '>id' header line, or "
                            "remove the stray lines (is this a FASTA file?)", path, lineno, rid)
        return b""
    seq = raw.translate(table, delete)
    if _BAD in seq:
        m = _INVALID_RE.search(raw)
        b = m.group()[0]
        char = repr(chr(b)) if 32 <= b < 127 else f"byte 0x{b:02x} (binary or non-ASCII data?)"
        raise _error_at(raw, m.start(), f"invalid character {char}", _FIX_RESIDUE, path, lineno, rid)
    return seq


def _error_at(raw: bytes, index: int | None, problem: str, fix: str, path: str, lineno: int,
              rid: str | None) -> FastaError:
    """Error located at ``raw[index]`` (or at its first non-blank character when index is None)."""
    if index is None:
        index = len(raw) - len(raw.lstrip())
    column = index - raw.rfind(b"\n", 0, index)
    return FastaError(problem, fix, path, lineno + raw.count(b"\n", 0, index), rid, column)


def _too_long(max_length: float, path: str, start: int, rid: str | None) -> FastaError:
    return FastaError(f"sequence longer than max_length={max_length}", "raise max_length, or drop or split "
                      "the record", path, start, rid)


def _record(rid: str, desc: str, chunks: list[bytes], path: str, start: int) -> FastaRecord:
    seq = b"".join(chunks)
    if not seq:
        raise FastaError("empty sequence (a header with no residues)", "remove the header or add its residues",
                         path, start, rid)
    return FastaRecord(rid, desc, seq.decode("ascii"), path, start)


def split_of(record_id: str, validation_fraction: float, salt: str = "") -> str:
    """Deterministic train/validation assignment of a record id.

    Uses SHA-256 (not Python's salted ``hash()``), so every process and machine agrees.

    Args:
      record_id: the record's id.
      validation_fraction: probability, in [0, 1], that an id lands in "validation".
      salt: changes the assignment (e.g. a different split per experiment).

    Returns:
      "train" or "validation".
    """
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
    digest = hashlib.sha256(salt.encode() + b"\0" + record_id.encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") < validation_fraction * 2**64 else "train"


def read_fasta(paths: Paths, *, normalize: bool = True, min_length: int = 1, max_length: int | None = None,
               check_unique_ids: bool = False, split: str | None = None, validation_fraction: float = 0.005,
               split_salt: str = "") -> Iterator[FastaRecord]:
    """Streams the records of FASTA files, validating every line.

    Args:
      paths: a path, a glob pattern (``/data/uniref50_*.fasta.gz``), a ``gs://`` URL, or a list of
        these; globs are read in sorted order. Plain or gzip (detected by magic bytes) files.
      normalize: apply ``alphabet.py``'s rule (upper case, gaps/whitespace/'*' dropped, UZOBJ -> X);
        when False, residues are kept as written, minus whitespace (still validated).
      min_length: records with fewer residues are skipped (a record with none is an error).
      max_length: if given, a longer record is an error.
      check_unique_ids: raise on an id seen before (keeps every id in memory).
      split: None for every record, or "train"/"validation" for one side of :func:`split_of`.
      validation_fraction: fraction of ids in the validation split.
      split_salt: salt for :func:`split_of`.

    Returns:
      An iterator over FastaRecord objects, in file order. Paths are checked at the call; the
      files are read (and validated) as the iterator advances.

    Raises:
      FastaError: for any problem in the input, naming the file, line, record and a fix.
    """
    if split not in (None, "train", "validation"):
        raise ValueError(f"split must be None, 'train' or 'validation', got {split!r}")
    split_of("", validation_fraction)  # Checks the fraction now rather than at the first record.
    limit = float("inf") if max_length is None else max_length
    return _records(expand_paths(paths), normalize, min_length, limit, check_unique_ids, split,
                    validation_fraction, split_salt)


def _records(files: list[str], normalize: bool, min_length: int, max_length: float, check_unique_ids: bool,
             split: str | None, validation_fraction: float, split_salt: str) -> Iterator[FastaRecord]:
    seen: dict[str, tuple[str, int]] = {}
    for path in files:
        for rec in _parse_file(path, normalize, max_length):
            if check_unique_ids:
                _check_unique(seen, rec)
            if len(rec.sequence) < min_length:
                continue
            if split is None or split_of(rec.id, validation_fraction, split_salt) == split:
                yield rec


def _check_unique(seen: dict[str, tuple[str, int]], rec: FastaRecord) -> None:
    if rec.id in seen:
        first_path, first_line = seen[rec.id]
        raise FastaError(f"duplicate record id (first seen at {first_path}, line {first_line})",
                         "give every record a unique id, or de-duplicate the input", rec.path, rec.line, rec.id)
    seen[rec.id] = (rec.path, rec.line)


def dataset_name(record_id: str) -> str:
    """ProtTrans' key for a sequence (its embedding file's dataset): ``/`` and ``.`` become ``_``."""
    return record_id.replace("/", "_").replace(".", "_")


def record_name(rec: FastaRecord, full_header_ids: bool = False) -> str:
    """The id a command names a record by: the header's first word, or (``full_header_ids``) the whole header."""
    return f"{rec.id} {rec.description}".strip() if full_header_ids else rec.id


def validated_records(paths: Paths, *, full_header_ids: bool = False, **read_kwargs) -> Iterator[FastaRecord]:
    """:func:`read_fasta` plus the rules every command shares (``validate-fasta``, ``embed``).

    Besides each record's own checks (an empty sequence is an error), the input must hold at least one
    record, and record names (:func:`record_name`) must stay unique after ProtTrans' renaming
    (:func:`dataset_name`). These are checked once the last record is read: names are kept as 8-byte
    hashes (UniRef50's 50 M fit in memory), and a repeated hash is confirmed by a second pass over the input.

    Args:
      paths: as for :func:`read_fasta`.
      full_header_ids: name records by the whole header line (``embed --full-header-ids``).
      **read_kwargs: passed to :func:`read_fasta`.

    Raises:
      FastaError: for a malformed input, no records, or two records with the same name (naming both places).
    """
    import array

    files = expand_paths(paths)
    hashes = array.array("q")
    for rec in read_fasta(files, **read_kwargs):
        hashes.append(hash(dataset_name(record_name(rec, full_header_ids))))
        yield rec
    if not hashes:
        shown = os.fspath(paths) if isinstance(paths, (str, os.PathLike)) else ", ".join(files)
        raise FastaError("no records", "give a FASTA file with at least one '>id' header and its sequence", shown)
    repeated = _repeated(hashes)
    if repeated:
        _raise_duplicate(files, repeated, full_header_ids, read_kwargs)


def _repeated(hashes) -> set[int]:
    """The values that occur more than once in an ``array('q')``."""
    import numpy as np

    values = np.sort(np.frombuffer(hashes, np.int64))
    return set(values[1:][values[1:] == values[:-1]].tolist())


def _raise_duplicate(files: list[str], repeated: set[int], full_header_ids: bool, read_kwargs: dict) -> None:
    """Second pass: raises for the first record whose name an earlier record already has."""
    first: dict[str, FastaRecord] = {}
    for rec in read_fasta(files, **read_kwargs):
        name = dataset_name(record_name(rec, full_header_ids))
        if hash(name) not in repeated:
            continue
        if name in first:
            other = first[name]
            if record_name(other, full_header_ids) == record_name(rec, full_header_ids):
                problem = f"duplicate record id (first seen at {other.path}, line {other.line})"
            else:
                problem = (f"its dataset name {name!r} ('/' and '.' become '_', as in embedding files) is already "
                           f"used by the record {record_name(other, full_header_ids)!r} at {other.path}, line {other.line}")
            raise FastaError(problem, "give every record a unique id (also after '/' and '.' become '_')",
                             rec.path, rec.line, rec.id)
        first[name] = rec


def fasta_stats(paths: Paths, **read_kwargs) -> dict:
    """Validates FASTA files with the rules every command shares (:func:`validated_records`) and summarises them.

    Args:
      paths: as for :func:`read_fasta`.
      **read_kwargs: passed to :func:`validated_records` (e.g. ``full_header_ids=True``).

    Returns:
      ``{"files", "records", "residues", "min_length", "max_length", "mean_length"}``.
    """
    records, residues, lo, hi = 0, 0, float("inf"), 0  # Running values: UniRef50 has ~50 M records.
    for rec in validated_records(paths, **read_kwargs):
        n = len(rec.sequence)
        records, residues, lo, hi = records + 1, residues + n, min(lo, n), max(hi, n)
    return {"files": len(expand_paths(paths)), "records": records, "residues": residues, "min_length": lo,
            "max_length": hi, "mean_length": residues / records}
