"""The paper's metrics on hand-computed cases: Q3/Q8 under the CB513 and disorder masks, Q2 over M/S proteins
only, MCC, and bootstrap SEs that resample proteins (not residues). Heads are replaced by an "echo" head whose
outputs are its inputs, so the predictions are exactly the ones written here."""

from __future__ import annotations

import math

import flax.linen as nn
import numpy as np
import pytest

from prottrans_jax.downstream import datasets, metrics, protein_training, residue_training
from prottrans_jax.models.heads import LocalizationFNN


class EchoResidueHead(nn.Module):
    """Per-residue 'head' whose logits are slices of its input: [dssp3 3 | dssp8 8 | disorder 2]."""

    @nn.compact
    def __call__(self, x, mask, train: bool = False):  # x: [batch, length, 13]
        return {"dssp3": x[..., :3], "dssp8": x[..., 3:11], "disorder": x[..., 11:13]}


class EchoProteinHead(LocalizationFNN):
    """Per-protein 'head' (one vector a protein): [location 10 | membrane 2]."""

    @nn.compact
    def __call__(self, x, train: bool = False):  # x: [batch, 12]
        return {"location": x[:, :10], "membrane": x[:, 10:12]}


def _residue_features(dssp3: str, dssp8: str) -> np.ndarray:
    """[L, 13] one-hot logits that make the echo head predict exactly these letters."""
    x = np.zeros((len(dssp3), 13), np.float32)
    for i, (a, b) in enumerate(zip(dssp3, dssp8)):
        x[i, datasets.DSSP3.index(a)] = 5.0
        x[i, 3 + datasets.DSSP8.index(b)] = 5.0
    return x


CSV_ROWS = [  # seq, true dssp3, true dssp8, disorder (1 resolved), cb513_mask
    ("MKVA", "HHEC", "HHEC", "1 1 1 1", "1 1 0 1"),
    ("GSTL", "CCEE", "CCEE", "1 0 1 1", "1 1 1 1"),
]
PREDICTED = [("HEEC", "HGEC"), ("CHEC", "CHEC")]
# Chain 1: dssp3 right at 0, 3 (wrong at 1; position 2 is right but masked out by cb513) -> 2 of 3 scored.
# Chain 2: position 1 is disordered (not scored); right at 0, 2; wrong at 3 -> 2 of 3 scored.
# DSSP8 chain 1: predicted H G E C vs H H E C -> right at 0, 2, 3 (2 of the 3 scored); chain 2 as DSSP3.


def _write_csv(path, with_mask: bool, spaced_header: bool):
    sep = ", " if spaced_header else ","
    cols = ["seq", "dssp3", "dssp8", "disorder"] + (["cb513_mask"] if with_mask else [])
    lines = [sep.join(cols)]
    for seq, d3, d8, dis, mask in CSV_ROWS:
        fields = [" ".join(seq), " ".join(d3), " ".join(d8), dis] + ([mask] if with_mask else [])
        lines.append(",".join(fields))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("with_mask,expected_q3,expected_q8", [(True, 4 / 6, 4 / 6), (False, 5 / 7, 5 / 7)])
@pytest.mark.parametrize("spaced_header", [False, True])
def test_q3_q8_count_exactly_the_scored_residues(tmp_path, with_mask, expected_q3, expected_q8, spaced_header):
    path = _write_csv(tmp_path / ("CB513_tiny.csv" if with_mask else "CASP12_tiny.csv"), with_mask, spaced_header)
    records = datasets.read_netsurfp_csv(path)
    feats = [_residue_features(d3, d8) for d3, d8 in PREDICTED]
    scores = residue_training.evaluate_residue_head({}, EchoResidueHead(), feats, records, n_boot=50)
    # Without the mask: chain 1 scores all 4 resolved residues (position 2 right too): 3 of 4; chain 2: 2 of 3.
    assert scores["dssp3"]["accuracy"] == pytest.approx(expected_q3)
    assert scores["dssp8"]["accuracy"] == pytest.approx(expected_q8)
    assert scores["dssp3"]["residues"] == (6 if with_mask else 7)


def test_q2_leaves_unknown_membrane_labels_out_and_q10_counts_every_protein():
    # location truth / prediction, membrane truth (1 M, 0 S, -1 U) / prediction
    rows = [(0, 0, 1, 1), (1, 1, 0, 1), (2, 3, -1, 0), (3, 3, -1, 1), (4, 5, 0, 0), (5, 5, 1, 0)]
    records = [datasets.ProteinRecord(f"p{i}", "MKV", loc, mem) for i, (loc, _, mem, _) in enumerate(rows)]
    feats = []
    for _, loc_pred, _, mem_pred in rows:
        x = np.zeros(12, np.float32)
        x[loc_pred], x[10 + mem_pred] = 5.0, 5.0
        feats.append(x)
    scores = protein_training.evaluate_protein_head({}, EchoProteinHead(), feats, records, n_boot=50)
    assert scores["location"]["accuracy"] == pytest.approx(4 / 6)  # wrong: p2 (2->3), p4 (4->5)
    membrane = scores["membrane"]
    assert membrane["proteins"] == 4  # the two U proteins are not scored
    assert membrane["accuracy"] == pytest.approx(2 / 4)  # known: p0 right, p1 wrong, p4 right, p5 wrong
    # Binary MCC by hand: TP=1 (p0), TN=1 (p4), FP=1 (p1), FN=1 (p5) -> (1*1 - 1*1) / sqrt(2*2*2*2) = 0.
    assert membrane["mcc"] == pytest.approx(0.0)


def test_mcc_matches_its_formula_on_a_binary_case():
    y_true = np.array([1, 1, 1, 0, 0, 0, 0, 1, 0, 0])
    y_pred = np.array([1, 1, 0, 0, 0, 1, 0, 1, 0, 0])
    tp, tn, fp, fn = 3, 5, 1, 1
    want = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    got = metrics.classification_summary(y_true, y_pred, ["S", "M"])
    assert got["mcc"] == pytest.approx(want)
    assert got["confusion"] == [[5, 1], [1, 3]]
    assert got["per_class"]["M"] == {"precision": 0.75, "recall": 0.75, "support": 4}


def test_bootstrap_se_of_a_protein_accuracy_is_the_binomial_one():
    n, right = 400, 300
    correct = np.r_[np.ones(right), np.zeros(n - right)]
    se = metrics.bootstrap_se(correct, np.ones(n), n=4000, seed=1)
    want = math.sqrt(0.75 * 0.25 / n)  # 0.02165
    assert se == pytest.approx(want, rel=0.06)


def test_bootstrap_se_of_residue_accuracy_resamples_chains_not_residues():
    """40 chains of 50 residues, each all right or all wrong: the SE is the chains' binomial SE, not the
    7x smaller one 2,000 independent residues would give."""
    chains, length = 40, 50
    right = np.r_[np.ones(30), np.zeros(10)] * length
    se = metrics.bootstrap_se(right, np.full(chains, length), n=4000, seed=2)
    per_chain = math.sqrt(0.75 * 0.25 / chains)  # 0.0685
    per_residue = math.sqrt(0.75 * 0.25 / (chains * length))  # 0.0097
    assert se == pytest.approx(per_chain, rel=0.08)
    assert se > 4 * per_residue
