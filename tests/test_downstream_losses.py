"""Head training reports one loss: the training and validation figures are the same quantity."""

from __future__ import annotations

import numpy as np
import pytest

from prottrans_jax.downstream import datasets, encodings, protein_training as pt, residue_training as rt
from prottrans_jax.models.heads import LocalizationFNN, SecondaryStructureCNN


@pytest.fixture(scope="module")
def cb513_part(shared_data):
    records = datasets.read_netsurfp_csv(shared_data / "netsurfp" / "CB513_HHblits.csv")
    return [r for r in records if len(r.sequence) <= 64][:16]  # short chains: few padded shapes to compile


def test_residue_train_and_validation_loss_agree_on_the_same_data(cb513_part, capsys):
    """With no dropout and a zero learning rate, the epoch's training loss is the validation loss of its data."""
    feats = encodings.baseline_features("onehot", [r.sequence for r in cb513_part])
    config = rt.TrainConfig(learning_rate=0.0, batch_size=4, max_epochs=1, validation_fraction=0.25)
    head = SecondaryStructureCNN(dropout_rate=0.0)
    params, history = rt.train_residue_head(feats, cb513_part, config, head)
    train_idx, _ = rt.split_validation(len(cb513_part), config.validation_fraction, config.seed)
    val = rt.evaluate_residue_head(params, head, [feats[i] for i in train_idx], [cb513_part[i] for i in train_idx],
                                   n_boot=0, batch_size=6)  # other batches: the loss must not depend on them
    assert history[0]["train_loss"] == pytest.approx(val["loss"], rel=1e-5)
    # All three tasks: above DSSP3's cross entropy alone (what validation used to report).
    probs = rt.predict_residue_head(params, head, [feats[i] for i in train_idx],
                                    [len(cb513_part[i].sequence) for i in train_idx])
    dssp3 = np.concatenate([-np.log(p["dssp3"][np.arange(len(r.sequence)), r.dssp3])[r.resolved]
                            for p, r in zip(probs, [cb513_part[i] for i in train_idx])])
    assert val["loss"] > dssp3.mean() + 1.0
    line = capsys.readouterr().out.strip()
    assert f"{rt.LOSS_NAME} train=" in line and " val=" in line and "train_loss" not in line


def test_protein_validation_loss_is_the_training_objective(shared_data):
    records = datasets.read_deeploc_fasta(shared_data / "deeploc" / "deeploc_our_val_set.fasta")[:40]
    feats = [f.mean(axis=0) for f in encodings.baseline_features("onehot", [r.sequence for r in records])]
    config = rt.TrainConfig(batch_size=14, max_epochs=2, validation_fraction=0.3)
    head = LocalizationFNN()
    variables, history = pt.train_protein_head(feats, records, config, head, progress=False)
    assert all(np.isfinite([h["train_loss"], h["val_loss"]]).all() for h in history)
    _, val_idx = rt.split_validation(len(records), config.validation_fraction, config.seed)
    val_r = [records[i] for i in val_idx]
    probs = pt.predict_protein_head(variables, head, [feats[i] for i in val_idx])
    location = -np.log(probs["location"][np.arange(len(val_r)), [r.location for r in val_r]]).mean()
    known = [(j, r.membrane) for j, r in enumerate(val_r) if r.membrane >= 0]
    membrane = -np.mean([np.log(probs["membrane"][j, m]) for j, m in known])
    best = max(history, key=lambda h: h["val_q10"])  # the returned variables are the best epoch's
    assert best["val_loss"] == pytest.approx(location + membrane, rel=1e-4)
