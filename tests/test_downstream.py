"""Downstream: NetSurfP/DeepLoc readers on the real files, encodings, metrics, heads, per-residue training."""

from __future__ import annotations

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prottrans_jax.downstream import datasets, encodings, metrics, residue_training as rt
from prottrans_jax.models.heads import LightAttention, LocalizationFNN, SecondaryStructureCNN

DSSP8_TO_3 = {"G": "H", "H": "H", "I": "H", "E": "E", "B": "E", "S": "C", "T": "C", "C": "C"}


@pytest.fixture(scope="module")
def cb513(shared_data):
    return datasets.read_netsurfp_csv(shared_data / "netsurfp" / "CB513_HHblits.csv")


def test_netsurfp_files_parse_consistently(cb513, shared_data):
    ts115 = datasets.read_netsurfp_csv(shared_data / "netsurfp" / "TS115_HHblits.csv")
    assert len(cb513) == 511 and len(ts115) == 115
    for r in cb513 + ts115:
        assert len(r.sequence) == len(r.dssp3) == len(r.dssp8) == len(r.resolved)
        # DSSP8 reduces to DSSP3 by the standard rule in every residue of the real files.
        assert [datasets.DSSP3[i] for i in r.dssp3] == [DSSP8_TO_3[datasets.DSSP8[i]] for i in r.dssp8]
        assert not (r.evaluate & ~r.resolved).any()
    # CB513's mask removes residues beyond the disordered ones; TS115 scores every resolved residue.
    assert sum(r.evaluate.sum() for r in cb513) < sum(r.resolved.sum() for r in cb513)
    assert all((r.evaluate == r.resolved).all() for r in ts115)


@pytest.mark.parametrize("row, needle", [
    ("M K V,H E,H E C,1 1 1,1 1 1", "dssp3 has 2 labels for 3 residues"),
    ("M K V,H E Q,H E C,1 1 1,1 1 1", "label 'Q' is not one of 'HEC'"),
    ("M K V,H E C,H E C,1 0.5 1,1 1 1", "disorder must be 0 or 1"),
    ("M K 1,H E C,H E C,1 1 1,1 1 1", "line 2"),
])
def test_malformed_netsurfp_rows_are_named(tmp_path, row, needle):
    path = tmp_path / "bad.csv"
    path.write_text("seq,dssp3,dssp8, disorder, cb513_mask\n" + row + "\n")
    with pytest.raises(ValueError, match=needle) as e:
        datasets.read_netsurfp_csv(path)
    assert str(path) in str(e.value)
    path.write_text("seq,dssp3,dssp8\nM,H,H\n")
    with pytest.raises(datasets.DatasetError, match="missing column"):
        datasets.read_netsurfp_csv(path)


def test_deeploc_files(shared_data):
    path = shared_data / "deeploc" / "deeploc_our_val_set.fasta"
    val = datasets.read_deeploc_fasta(path)
    hard = datasets.read_deeploc_fasta(shared_data / "deeploc" / "setHARD.fasta")
    assert len(val) == 1678 and len(hard) == 490
    headers = [line.split()[1] for line in path.read_text().splitlines() if line.startswith(">")]
    expected = collections.Counter(datasets.LOCATION_ALIASES.get(h.rpartition("-")[0], h.rpartition("-")[0])
                                   for h in headers)
    assert collections.Counter(datasets.LOCATIONS[r.location] for r in val) == expected
    assert collections.Counter(r.membrane for r in val) == collections.Counter(
        {"M": 1, "S": 0, "U": -1}[h[-1]] for h in headers)


def test_bad_deeploc_label(tmp_path):
    path = tmp_path / "bad.fasta"
    path.write_text(">P1 Nucleus-M\nMKV\n>P2 Nowhere-S\nMKV\n")
    with pytest.raises(datasets.DatasetError, match="line 3, record 'P2'.*'Nowhere-S'"):
        datasets.read_deeploc_fasta(path)


def test_encodings():
    seq = "ACWXY"
    oh = encodings.one_hot(seq)
    assert oh.shape == (5, 21) and (oh.sum(1) == 1).all()
    assert [encodings.RESIDUES[i] for i in oh.argmax(1)] == list(seq)
    bl = encodings.blosum62(seq)
    assert bl[2, encodings.RESIDUES.index("W")] == 11 / 4 and bl[0, 0] == 4 / 4  # W-W 11, A-A 4
    ac = encodings.blosum62("AC")
    assert ac[0, encodings.RESIDUES.index("C")] == ac[1, encodings.RESIDUES.index("A")] == 0.0  # symmetric A-C 0
    with pytest.raises(ValueError, match="'B'"):
        encodings.one_hot("AB")


def test_bootstrap_se_matches_the_binomial_standard_error():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, 4000)
    y_pred = np.where(rng.random(4000) < 0.7, y_true, 1 - y_true)
    scores = metrics.protein_scores(y_true, y_pred, ["soluble", "membrane"], n_boot=2000)
    p = scores["accuracy"]
    assert abs(scores["se"] / np.sqrt(p * (1 - p) / 4000) - 1) < 0.1
    assert sum(map(sum, scores["confusion"])) == 4000
    assert scores["per_class"]["membrane"]["support"] == int(np.sum(y_true == 1))


def test_cnn_ignores_padding():
    head = SecondaryStructureCNN()
    x = jax.random.normal(jax.random.key(0), (2, 40, 21))
    mask = jnp.ones((2, 40)).at[1, 25:].set(0)
    params = head.init(jax.random.key(1), x, mask)["params"]
    batched = head.apply({"params": params}, x, mask)
    alone = head.apply({"params": params}, x[1:, :25], mask[1:, :25])
    for k in ("dssp3", "dssp8", "disorder"):
        np.testing.assert_allclose(batched[k][1, :25], alone[k][0], atol=1e-5)


def test_light_attention_and_fnn_shapes_and_masking():
    x = jax.random.normal(jax.random.key(0), (3, 30, 16))
    mask = jnp.ones((3, 30)).at[2, 10:].set(0)
    la = LightAttention()
    variables = la.init(jax.random.key(1), x, mask)
    out = la.apply(variables, x, mask)
    assert out["location"].shape == (3, 10) and out["membrane"].shape == (3, 2)
    noisy = x.at[2, 10:].set(100.0)  # what lies beyond the mask must not matter
    np.testing.assert_allclose(la.apply(variables, noisy, mask)["location"][2], out["location"][2], atol=1e-5)
    fnn = LocalizationFNN()
    v = fnn.init(jax.random.key(2), x.mean(1))
    assert fnn.apply(v, x.mean(1))["location"].shape == (3, 10)


def test_cnn_learns_secondary_structure_and_round_trips(cb513, tmp_path):
    feats = encodings.baseline_features("onehot", [r.sequence for r in cb513])
    params, history = rt.train_residue_head(feats, cb513, rt.TrainConfig(max_epochs=4, validation_fraction=0.2),
                                            out_dir=tmp_path, progress=False)
    coil = np.mean(np.concatenate([r.dssp3[r.resolved] for r in cb513]) == datasets.DSSP3.index("C"))
    assert max(h["val_q3"] for h in history) > coil + 0.05  # better than always guessing coil
    loaded = rt.load_head(tmp_path, SecondaryStructureCNN(), 21)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _subset_csv(src, dst, n):
    lines = src.read_text().splitlines()
    dst.write_text("\n".join(lines[:n + 1]) + "\n")
    return dst


def _subset_fasta(src, dst, n):
    out, count = [], 0
    for line in src.read_text().splitlines():
        count += line.startswith(">")
        if count > n:
            break
        out.append(line)
    dst.write_text("\n".join(out) + "\n")
    return dst


def test_heads_cli_train_evaluate_and_predict(tmp_path, shared_data, capsys):
    from prottrans_jax import cli

    ss_data = _subset_csv(shared_data / "netsurfp" / "CB513_HHblits.csv", tmp_path / "cb.csv", 120)
    loc_data = _subset_fasta(shared_data / "deeploc" / "deeploc_our_val_set.fasta", tmp_path / "loc.fasta", 200)
    assert cli.main(["heads", "train", "--task", "secondary-structure", "--data", str(ss_data), "--features",
                     "blosum62", "--epochs", "2", "--out", str(tmp_path / "ss")]) == 0
    assert cli.main(["heads", "train", "--task", "localization", "--data", str(loc_data), "--head", "la",
                     "--epochs", "2", "--batch-size", "16", "--out", str(tmp_path / "loc")]) == 0
    assert cli.main(["heads", "evaluate", "--head", str(tmp_path / "ss"), "--data", str(ss_data),
                     "--report", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    assert "Q3 " in printed and "Q8 " in printed
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| Q3 |" in report and "confusion_Q3.png" in report and "learning_curves.png" in report
    assert (tmp_path / "rep" / "confusion_Q8.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["heads", "evaluate", "--head", str(tmp_path / "loc"), "--data", str(loc_data),
                     "--report", str(tmp_path / "rep_loc")]) == 0
    assert (tmp_path / "rep_loc" / "projection.png").is_file() and "| Q2 |" in (
        tmp_path / "rep_loc" / "report.md").read_text()

    query = _subset_fasta(loc_data, tmp_path / "q.fasta", 3)
    assert cli.main(["predict", "--fasta", str(query), "--head", str(tmp_path / "ss"), "--head",
                     str(tmp_path / "loc"), "--out", str(tmp_path / "pred")]) == 0
    rows = (tmp_path / "pred.residues.tsv").read_text().splitlines()
    proteins = (tmp_path / "pred.proteins.tsv").read_text().splitlines()
    result = json.loads((tmp_path / "pred.json").read_text())
    assert len(result) == 3 and len(proteins) == 4
    assert len(rows) == 1 + sum(len(r["sequence"]) for r in result.values())
    for r in result.values():
        assert len(r["dssp3"]) == len(r["sequence"]) and set(r["dssp3"]) <= set("HEC")
        assert abs(sum(r["location_probabilities"].values()) - 1) < 1e-3 and r["location"] in datasets.LOCATIONS
        np.testing.assert_allclose(np.sum(r["dssp8_probabilities"], axis=1), 1, atol=1e-3)
    _check_prediction_files_agree(query, rows, proteins, result)


def _check_prediction_files_agree(query, rows, proteins, result):
    """Columns by name and order; proteins in FASTA order; TSVs say what the JSON says; letters are argmaxes."""
    fasta_ids = [line[1:].split()[0] for line in query.read_text().splitlines() if line.startswith(">")]
    assert list(result) == fasta_ids
    assert rows[0].split("\t") == (["id", "position", "residue", "dssp3", "p_H3", "p_E3", "p_C3", "dssp8"]
                                   + [f"p_{c}8" for c in "GHIBESTC"] + ["p_disorder"])
    assert proteins[0].split("\t") == (["id", "length", "location"] + [f"p_{n}" for n in datasets.LOCATIONS]
                                       + ["membrane", "p_membrane"])
    residue_rows = [line.split("\t") for line in rows[1:]]
    assert [f[0] for f in residue_rows] == [rid for rid in fasta_ids for _ in result[rid]["sequence"]]
    for rid in fasta_ids:
        r = result[rid]
        mine = [f for f in residue_rows if f[0] == rid]
        assert [int(f[1]) for f in mine] == list(range(1, len(r["sequence"]) + 1))
        assert "".join(f[2] for f in mine) == r["sequence"]
        assert "".join(f[3] for f in mine) == r["dssp3"] and "".join(f[7] for f in mine) == r["dssp8"]
        np.testing.assert_allclose([[float(x) for x in f[4:7]] for f in mine], r["dssp3_probabilities"], atol=1e-4)
        np.testing.assert_allclose([float(f[16]) for f in mine], r["disorder_probability"], atol=1e-4)
        for name, classes in (("dssp3", datasets.DSSP3), ("dssp8", datasets.DSSP8)):
            probs = np.asarray(r[f"{name}_probabilities"])  # rounded to 4 places: ties allowed
            chosen = probs[np.arange(len(probs)), [classes.index(c) for c in r[name]]]
            np.testing.assert_allclose(chosen, probs.max(axis=1), atol=1e-4)
    for line, rid in zip(proteins[1:], fasta_ids):
        f = line.split("\t")
        r = result[rid]
        assert f[0] == rid and int(f[1]) == len(r["sequence"]) and f[2] == r["location"]
        probs = dict(zip(datasets.LOCATIONS, map(float, f[3:13])))
        assert max(probs, key=probs.get) == r["location"]
        assert probs == pytest.approx(r["location_probabilities"], abs=1e-4)
        assert f[13] == r["membrane"] and float(f[14]) == pytest.approx(r["membrane_probability"], abs=1e-4)
        assert (float(f[14]) > 0.5) == (r["membrane"] == "membrane")


def test_heads_cli_errors(tmp_path, capsys):
    from prottrans_jax import cli

    assert cli.main(["heads", "evaluate", "--head", str(tmp_path), "--data", "x.csv"]) == 2
    assert "not a trained head folder" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("seq,dssp3\nM,H\n")
    assert cli.main(["heads", "train", "--task", "secondary-structure", "--data", str(bad), "--out",
                     str(tmp_path / "o")]) == 2
    assert "missing column" in capsys.readouterr().err
    assert cli.main(["heads", "train", "--task", "secondary-structure", "--data", str(bad), "--features",
                     "nonsense", "--out", str(tmp_path / "o")]) == 2


def test_heads_on_language_model_embeddings(tmp_path, shared_data, capsys):
    """heads fasta -> embed (per residue) -> heads train on the H5 -> predict embedding new proteins on the fly."""
    from model_dirs import write_model_dir

    from prottrans_jax import cli

    write_model_dir(tmp_path / "lm", "t5")
    ss_data = _subset_csv(shared_data / "netsurfp" / "TS115_HHblits.csv", tmp_path / "ts.csv", 40)
    assert cli.main(["heads", "fasta", "--task", "secondary-structure", "--data", str(ss_data), "--out",
                     str(tmp_path / "ts.fasta")]) == 0
    assert cli.main(["embed", "--model", str(tmp_path / "lm"), "--fasta", str(tmp_path / "ts.fasta"), "--out",
                     str(tmp_path / "ts.h5"), "--per-residue", "--no-progress"]) == 0
    assert cli.main(["heads", "train", "--task", "secondary-structure", "--data", str(ss_data), "--features",
                     f"h5:{tmp_path / 'ts.h5'}", "--epochs", "1", "--out", str(tmp_path / "ss")]) == 0
    info = json.loads((tmp_path / "ss" / "head.json").read_text())
    assert info["input_dim"] == 32
    # The embed file's record of the model's weights travels into the head (what predict --model checks).
    from prottrans_jax import model_io
    from prottrans_jax.downstream import provenance

    fingerprint = provenance.model_fingerprint(model_io.load_model(tmp_path / "lm"))
    assert (info["provenance"]["features"], info["provenance"]["model_fingerprint"]) == ("h5", fingerprint)
    capsys.readouterr()
    novel = tmp_path / "novel.fasta"
    novel.write_text(">novel\nMKVLAAGIVGLLLAW\n")
    assert cli.main(["predict", "--fasta", str(novel), "--head", str(tmp_path / "ss"),
                     "--out", str(tmp_path / "p")]) == 2  # not in the H5: the head needs the language model
    assert "'novel'" in (err := capsys.readouterr().err) and "--model" in err
    assert cli.main(["predict", "--fasta", str(novel), "--head", str(tmp_path / "ss"),
                     "--model", str(tmp_path / "lm"), "--out", str(tmp_path / "p")]) == 0
    assert len((tmp_path / "p.residues.tsv").read_text().splitlines()) == 1 + 15
    # On-the-fly embeddings are the H5's: the head's predictions agree with evaluating on the file.
    assert cli.main(["heads", "evaluate", "--head", str(tmp_path / "ss"), "--data", str(ss_data), "--features",
                     f"model:{tmp_path / 'lm'}", "--report", str(tmp_path / "r1")]) == 0
    assert cli.main(["heads", "evaluate", "--head", str(tmp_path / "ss"), "--data", str(ss_data),
                     "--report", str(tmp_path / "r2")]) == 0
    a = json.loads((tmp_path / "r1" / "scores.json").read_text())["Q3"]["accuracy"]
    b = json.loads((tmp_path / "r2" / "scores.json").read_text())["Q3"]["accuracy"]
    assert a == pytest.approx(b, abs=1e-4)
