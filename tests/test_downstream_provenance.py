"""Heads record where their features came from and refuse other features (predict, heads evaluate)."""

from __future__ import annotations

import csv
import json
import pathlib
import shutil

import numpy as np
import pytest

from prottrans_jax import cli, model_io
from prottrans_jax.downstream import provenance

SHIPPED_HEAD = pathlib.Path(__file__).resolve().parents[1] / "prottrans_jax" / "data" / "heads" / "ss_onehot_cnn"
QUERY = ">q1\nMKVLAAGIVGLLLAWTE\n>q2\nGSHMSEQ\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_data):
    """Two tiny T5s of the same shape and other weights, a BERT of the same width, short chains, a query."""
    from model_dirs import write_model_dir

    root = tmp_path_factory.mktemp("provenance")
    for name, family, seed in (("a", "t5", 0), ("b", "t5", 1), ("bert", "bert", 0)):
        write_model_dir(root / name, family, seed=seed)
    with open(shared_data / "netsurfp" / "TS115_HHblits.csv", newline="") as f:
        rows = list(csv.reader(f))
    short = [r for r in rows[1:] if len(r[0].split()) <= 100][:6]  # BERT tiny has 128 positions
    with open(root / "ss.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + short)
    (root / "q.fasta").write_text(QUERY)
    assert cli.main(["heads", "train", "--task", "secondary-structure", "--data", str(root / "ss.csv"),
                     "--features", f"model:{root / 'a'}", "--epochs", "1", "--out", str(root / "head_a")]) == 0
    return root


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_fingerprint_follows_the_weights_not_the_files(world, tmp_path):
    from prottrans_jax.hf import export

    a = model_io.load_model(world / "a")
    fp = provenance.model_fingerprint(a)
    assert fp == provenance.model_fingerprint(model_io.load_model(world / "a"))
    assert fp != provenance.model_fingerprint(model_io.load_model(world / "b"))
    hf = export.export_model(a, tmp_path / "hf", encoder_only=True)  # the same encoder, another format
    assert provenance.model_fingerprint(model_io.load_hf(hf)) == fp
    # A LoRA merge adds a low-rank product to the attention kernels: every value moves a little.
    kernel = a.params["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    rng = np.random.default_rng(0)
    a.params["encoder"]["layers_0"]["attention"]["query"]["kernel"] = kernel + 1e-3 * (
        rng.standard_normal((kernel.shape[0], 4)) @ rng.standard_normal((4, kernel.shape[1]))).astype(kernel.dtype)
    assert provenance.model_fingerprint(a) != fp


def test_a_head_records_its_features(world):
    info = json.loads((world / "head_a" / "head.json").read_text())
    prov = info["provenance"]
    a = model_io.load_model(world / "a")
    assert prov["model_fingerprint"] == provenance.model_fingerprint(a)
    assert (prov["features"], prov["architecture"], prov["layer"], prov["pooling"], prov["hidden_size"]) == (
        "model", a.architecture, a.config.num_encoder_layers, "per_residue", info["input_dim"])


def test_predict_refuses_another_models_embeddings(world, tmp_path, capsys):
    head, query, out = str(world / "head_a"), str(world / "q.fasta"), tmp_path / "p"
    fp_a, fp_b = (provenance.model_fingerprint(model_io.load_model(world / m))[:12] for m in ("a", "b"))
    for other in ("b", "bert"):  # the same width: without the check these ran and wrote wrong predictions
        assert cli.main(["predict", "--fasta", query, "--head", head, "--model", str(world / other),
                         "--out", str(out)]) == 2
        err = _error(capsys)
        assert head in err and "trained on" in err and fp_a in err and str(world / other) in err
        assert fp_b in err if other == "b" else "Bert" in err
        assert not list(tmp_path.iterdir())
    assert cli.main(["predict", "--fasta", query, "--head", head, "--model", str(world / "a"),
                     "--out", str(out)]) == 0
    assert set(json.loads((tmp_path / "p.json").read_text())) == {"q1", "q2"}


def test_heads_evaluate_refuses_other_features(world, tmp_path, capsys):
    head = str(world / "head_a")
    for features, needle in ((f"model:{world / 'b'}", "differ in model_fingerprint"), ("onehot", "onehot features")):
        assert cli.main(["heads", "evaluate", "--head", head, "--data", str(world / "ss.csv"), "--features",
                         features, "--report", str(tmp_path / "r")]) == 2
        err = _error(capsys)
        assert head in err and needle in err
    assert not (tmp_path / "r").exists()
    # A one-hot head refuses BLOSUM62 (also as 21 values per residue), and so does one from before heads
    # recorded their provenance, by its 'features' field.
    legacy = tmp_path / "legacy"
    shutil.copytree(SHIPPED_HEAD, legacy)
    info = json.loads((legacy / "head.json").read_text())
    del info["provenance"]
    (legacy / "head.json").write_text(json.dumps(info))
    for head in (SHIPPED_HEAD, legacy):
        assert cli.main(["heads", "evaluate", "--head", str(head), "--data", str(world / "ss.csv"),
                         "--features", "blosum62", "--report", str(tmp_path / "r")]) == 2
        assert "trained on onehot features but is given blosum62 features" in _error(capsys)


def test_a_one_hot_head_refuses_a_model(world, tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    assert cli.main(["predict", "--fasta", str(world / "q.fasta"), "--head", str(SHIPPED_HEAD), "--model",
                     str(missing), "--out", str(tmp_path / "p")]) == 2
    err = _error(capsys)
    assert "does not use a language model" in err and f"drop --model {missing}" in err
    assert not (tmp_path / "p.json").exists()


def test_predict_refuses_heads_of_different_models(world, tmp_path, capsys):
    head_b = tmp_path / "head_b"
    shutil.copytree(world / "head_a", head_b)
    info = json.loads((head_b / "head.json").read_text())
    info["provenance"] = provenance.features_provenance(f"model:{world / 'b'}", per_residue=True)
    (head_b / "head.json").write_text(json.dumps(info))
    assert cli.main(["predict", "--fasta", str(world / "q.fasta"), "--head", str(world / "head_a"), "--head",
                     str(head_b), "--model", str(world / "a"), "--out", str(tmp_path / "p")]) == 2
    err = _error(capsys)
    assert "different models" in err and str(head_b) in err and str(world / "head_a") in err
