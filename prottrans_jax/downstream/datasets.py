"""Downstream data sets with validation: NetSurfP-2.0 CSV (secondary structure) and DeepLoc FASTA (location)."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import pathlib
from typing import Optional

import numpy as np

from prottrans_jax import alphabet, fasta

DSSP3 = "HEC"
DSSP8 = "GHIBESTC"
# DeepLoc's ten locations, in the order of its paper; 'Cytoplasm-Nucleus' counts as Cytoplasm.
LOCATIONS = ("Cell.membrane", "Cytoplasm", "Endoplasmic.reticulum", "Golgi.apparatus", "Lysosome/Vacuole",
             "Mitochondrion", "Nucleus", "Peroxisome", "Plastid", "Extracellular")
LOCATION_ALIASES = {"Cytoplasm-Nucleus": "Cytoplasm"}
MEMBRANE = {"M": 1, "S": 0, "U": -1}  # membrane-bound, soluble, unknown (left out of the Q2 task)
NETSURFP_COLUMNS = ("seq", "dssp3", "dssp8", "disorder")  # required; ``cb513_mask`` is optional
CB513_MASK = "cb513_mask"


class DatasetError(ValueError):
    """A malformed downstream data file, located by file, line and record."""


@dataclasses.dataclass(frozen=True)
class ResidueRecord:
    """One chain of a per-residue data set.

    Attributes:
      id: a name (``<file stem>_<row>`` for NetSurfP CSV, which has no ids).
      sequence: normalised residues.
      dssp3: ``[L]`` int8 class ids in ``HEC`` order.
      dssp8: ``[L]`` int8 class ids in ``GHIBESTC`` order.
      resolved: ``[L]`` bool: True where the residue was resolved (disorder 1.0); only these are scored.
      evaluate: ``[L]`` bool: the residues a benchmark scores (resolved, and CB513's mask where given).
    """

    id: str
    sequence: str
    dssp3: np.ndarray
    dssp8: np.ndarray
    resolved: np.ndarray
    evaluate: np.ndarray


@dataclasses.dataclass(frozen=True)
class ProteinRecord:
    """One protein of a per-protein data set (DeepLoc).

    Attributes:
      id: the accession.
      sequence: normalised residues.
      location: index into :data:`LOCATIONS`.
      membrane: 1 membrane-bound, 0 soluble, -1 unknown.
    """

    id: str
    sequence: str
    location: int
    membrane: int


def _open_text(path: pathlib.Path):
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8"))


def _labels(field: str, letters: str, length: int, what: str, where: str) -> np.ndarray:
    tokens = field.split()
    if len(tokens) != length:
        raise DatasetError(f"{where}: {what} has {len(tokens)} labels for {length} residues")
    lookup = {c: i for i, c in enumerate(letters)}
    try:
        return np.array([lookup[t] for t in tokens], np.int8)
    except KeyError as e:
        raise DatasetError(f"{where}: {what} label {e.args[0]!r} is not one of {letters!r}") from None


def _flags(field: str, length: int, what: str, where: str) -> np.ndarray:
    tokens = field.split()
    if len(tokens) != length:
        raise DatasetError(f"{where}: {what} has {len(tokens)} values for {length} residues")
    try:
        values = np.array([float(t) for t in tokens])
    except ValueError:
        raise DatasetError(f"{where}: {what} holds a value that is not a number") from None
    if not np.isin(values, (0.0, 1.0)).all():
        raise DatasetError(f"{where}: {what} must be 0 or 1 per residue")
    return values == 1.0


def read_netsurfp_csv(path: str | pathlib.Path, use_cb513_mask: Optional[bool] = None) -> list[ResidueRecord]:
    """Reads a NetSurfP-2.0-style CSV: ``seq,dssp3,dssp8,disorder[,cb513_mask]``, fields space-separated per residue.

    NetSurfP's files carry ``cb513_mask``; ProtTrans' CASP12 and NEW364 files do not, and then every
    resolved residue counts. Column names are matched case-insensitively, ignoring surrounding spaces.

    Args:
      path: the file (plain or gzip).
      use_cb513_mask: score only residues where ``cb513_mask`` is 1 (default: when the file has that
        column and is CB513's, i.e. its name contains 'CB513'; True requires the column).

    Raises:
      DatasetError: a missing column or file, labels that do not match the sequence, unknown labels.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    reader = csv.reader(_open_text(path))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in NETSURFP_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path}: line 1: missing column(s) {missing}; expected {','.join(NETSURFP_COLUMNS)}"
                           f"[,{CB513_MASK}]")
    if use_cb513_mask and CB513_MASK not in header:
        raise DatasetError(f"{path}: line 1: no {CB513_MASK} column to score CB513's residues by")
    if use_cb513_mask is None:
        use_cb513_mask = "cb513" in path.name.lower() and CB513_MASK in header
    col = {c: header.index(c) for c in NETSURFP_COLUMNS + ((CB513_MASK,) if use_cb513_mask else ())}
    records = []
    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        where = f"{path}, line {lineno}"
        if len(row) < len(header):
            raise DatasetError(f"{where}: {len(row)} fields, expected {len(header)}")
        records.append(_residue_record(row, col, f"{path.name.split('.')[0]}_{lineno - 1}", where))
    if not records:
        raise DatasetError(f"{path}: no records")
    return records


def _residue_record(row: list[str], col: dict[str, int], rid: str, where: str) -> ResidueRecord:
    """One CSV row -> a record; ``col`` names the columns to read (``cb513_mask`` only when it is used)."""
    try:
        seq = alphabet.normalize_sequence(row[col["seq"]].replace(" ", ""), where)
    except ValueError as e:
        raise DatasetError(str(e)) from None
    if not seq:
        raise DatasetError(f"{where}: empty sequence")
    n = len(seq)
    resolved = _flags(row[col["disorder"]], n, "disorder", where)
    evaluate = resolved & _flags(row[col[CB513_MASK]], n, CB513_MASK, where) if CB513_MASK in col else resolved
    return ResidueRecord(rid, seq, _labels(row[col["dssp3"]], DSSP3, n, "dssp3", where),
                         _labels(row[col["dssp8"]], DSSP8, n, "dssp8", where), resolved, evaluate)


def parse_deeploc_label(description: str, where: str) -> tuple[int, int]:
    """``'Cell.membrane-M'`` (first word of a DeepLoc header's description) -> (location index, membrane)."""
    label = description.split()[0] if description.split() else ""
    location, _, suffix = label.rpartition("-")
    location = LOCATION_ALIASES.get(location, location)
    if location not in LOCATIONS or suffix not in MEMBRANE:
        raise DatasetError(f"{where}: label {label!r} is not '<location>-<M|S|U>' with a location in {LOCATIONS}")
    return LOCATIONS.index(location), MEMBRANE[suffix]


def read_deeploc_fasta(path: str | pathlib.Path) -> list[ProteinRecord]:
    """Reads a DeepLoc FASTA (``>ID Location-M``); sequences normalised.

    Raises:
      fasta.FastaError / DatasetError: malformed FASTA or a header without a DeepLoc label.
    """
    records = []
    for rec in fasta.read_fasta(str(path), check_unique_ids=True):
        location, membrane = parse_deeploc_label(rec.description, f"{rec.path}, line {rec.line}, record {rec.id!r}")
        records.append(ProteinRecord(rec.id, rec.sequence, location, membrane))
    if not records:
        raise DatasetError(f"{path}: no records")
    return records
