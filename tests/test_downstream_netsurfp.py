"""NetSurfP-style CSVs with and without ``cb513_mask`` (ProtTrans' CASP12 and NEW364 files have none)."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest

from prottrans_jax.downstream import datasets

SHIPPED_HEAD = pathlib.Path(__file__).resolve().parents[1] / "prottrans_jax" / "data" / "heads" / "ss_onehot_cnn"


def _rows(shared_data, n):
    """The header and the first ``n`` rows of the real CB513 file (it has a cb513_mask column)."""
    with open(shared_data / "netsurfp" / "CB513_HHblits.csv", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:n + 1]


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    return path


@pytest.mark.parametrize("header", [
    ["seq", "dssp3", "dssp8", "disorder"],
    ["seq", " dssp3", " dssp8", " disorder"],
    ["Seq ", "DSSP3", "dssp8 ", " Disorder "],
])
def test_files_without_a_mask_score_every_resolved_residue(tmp_path, shared_data, header):
    full_header, rows = _rows(shared_data, 12)
    mask_col = [h.strip() for h in full_header].index("cb513_mask")
    casp = _write(tmp_path / "CASP12.csv", header, [r[:mask_col] + r[mask_col + 1:] for r in rows])
    masked = datasets.read_netsurfp_csv(_write(tmp_path / "CB513_part.csv", full_header, rows))
    unmasked = datasets.read_netsurfp_csv(casp)
    assert len(unmasked) == len(masked) == 12
    for a, b in zip(unmasked, masked):
        assert a.sequence == b.sequence and (a.dssp3 == b.dssp3).all() and (a.resolved == b.resolved).all()
        assert (a.evaluate == a.resolved).all()  # no mask: every resolved residue counts (disorder still applies)
    assert sum(r.evaluate.sum() for r in masked) < sum(r.evaluate.sum() for r in unmasked)
    assert any((~r.resolved).any() for r in unmasked)  # disordered residues are still left out
    with pytest.raises(datasets.DatasetError, match="no cb513_mask column") as e:
        datasets.read_netsurfp_csv(casp, use_cb513_mask=True)
    assert str(casp) in str(e.value)


def test_both_layouts_with_spaces_in_the_header(tmp_path, shared_data):
    full_header, rows = _rows(shared_data, 12)
    spaced = _write(tmp_path / "cb513_spaced.csv", [" " + h.strip() + " " for h in full_header], rows)
    plain = _write(tmp_path / "cb513_plain.csv", [h.strip() for h in full_header], rows)
    a, b = datasets.read_netsurfp_csv(spaced), datasets.read_netsurfp_csv(plain)
    assert [np.array_equal(x.evaluate, y.evaluate) for x, y in zip(a, b)] == [True] * 12
    assert sum(r.evaluate.sum() for r in a) < sum(r.resolved.sum() for r in a)  # CB513's mask applied


def test_heads_evaluate_loads_a_casp12_style_file(tmp_path, shared_data, capsys):
    from prottrans_jax import cli

    full_header, rows = _rows(shared_data, 10)
    mask_col = [h.strip() for h in full_header].index("cb513_mask")
    new364 = _write(tmp_path / "NEW364.csv", ["seq", "dssp3", "dssp8", "disorder"],
                    [r[:mask_col] + r[mask_col + 1:] for r in rows])
    ts = _write(tmp_path / "with_mask.csv", full_header, rows)  # the same rows; the mask unused (not CB513)
    for data, report in ((new364, "r_new"), (ts, "r_ts")):
        assert cli.main(["heads", "evaluate", "--head", str(SHIPPED_HEAD), "--data", str(data),
                         "--report", str(tmp_path / report)]) == 0
    assert "Q3 " in capsys.readouterr().out
    new, with_mask = (json.loads((tmp_path / r / "scores.json").read_text())["Q3"] for r in ("r_new", "r_ts"))
    resolved = sum(r.resolved.sum() for r in datasets.read_netsurfp_csv(new364))
    assert new["residues"] == with_mask["residues"] == resolved
    assert new["accuracy"] == with_mask["accuracy"]
