"""The README's main job, `prottrans-jax quickstart`, end to end on a small corpus: what it leaves behind."""

import json

import h5py
import numpy as np
import transformers

from hf_loading import load_clean
from model_dirs import write_fasta
from proteins import read_proteins
from prottrans_jax import cli
from prottrans_jax.downstream import datasets


def test_quickstart_trains_exports_embeds_predicts_generates_and_scores(tmp_path, demo_corpus, monkeypatch, capsys):
    proteins = {f"qs{i}|demo": s[:120] for i, s in enumerate(read_proteins(demo_corpus, 64))}
    monkeypatch.setenv("PROTTRANS_JAX_CUSTOM_FASTA", str(write_fasta(tmp_path / "small.fa", proteins)))
    run = tmp_path / "run"
    assert cli.main(["quickstart", "--corpus", "custom", "--steps", "3", "--model-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"last checkpoint: {run / 'checkpoint_3'} (step 3)" in out

    # The tiny ProtT5 checkpoint and its HuggingFace export, which transformers loads whole.
    assert (run / "checkpoint_3" / "state").is_dir()
    hf = load_clean(transformers.T5ForConditionalGeneration, run / "hf")
    assert hf.config.d_model == 32

    # Per-protein embeddings of every corpus protein, named as ProtTrans' embedder names them.
    with h5py.File(run / "embeddings.h5") as f:
        assert sorted(f) == sorted(proteins)  # ids have no "/" or "." to rename
        assert {f[name].shape for name in f} == {(32,)}
        assert f.attrs["pooling"] == "per_protein" and f.attrs["step"] == 3
        assert np.isfinite(np.stack([f[name][()] for name in f])).all()

    # The prediction of the two shipped query proteins with the shipped one-hot head.
    result = json.loads((run / "prediction.json").read_text())
    assert list(result) == ["ubiquitin", "insulin_B"]
    for r in result.values():
        assert len(r["dssp3"]) == len(r["sequence"]) and set(r["dssp3"]) <= set(datasets.DSSP3)
        assert len(r["dssp8"]) == len(r["sequence"]) and set(r["dssp8"]) <= set(datasets.DSSP8)
    rows = (run / "prediction.residues.tsv").read_text().splitlines()
    assert len(rows) == 1 + sum(len(r["sequence"]) for r in result.values())
    assert result["insulin_B"]["dssp3"] in out  # shown to the user too

    # Two proteins sampled from the tiny ProtT5 (protein letters only, at most 40 residues, scored in the
    # header), and the query proteins' pseudo-log-likelihoods.
    fasta = (run / "generated.fasta").read_text().splitlines()
    headers, sequences = fasta[0::2], fasta[1::2]
    assert len(headers) == 2 and all(h.startswith(">gen_") and "log_likelihood=" in h for h in headers)
    assert all(0 < len(s) <= 40 and set(s) <= set("ACDEFGHIKLMNPQRSTVWY") for s in sequences)
    table = [line.split("\t") for line in (run / "scores.tsv").read_text().splitlines()]
    assert table[0][:5] == ["id", "length", "log_likelihood", "mean_log_likelihood", "perplexity"]
    assert [row[0] for row in table[1:]] == ["ubiquitin", "insulin_B"]
    assert all(float(row[2]) < 0 and float(row[4]) > 1 for row in table[1:])

    # Run again: everything is already there; it resumes, re-exports and replaces the prediction.
    assert cli.main(["quickstart", "--corpus", "custom", "--steps", "3", "--model-dir", str(run)]) == 0
    again = capsys.readouterr().out
    assert f"embedded 0 sequence(s) ({len(proteins)} already done)" in again
