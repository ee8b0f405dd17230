"""Fine-tuning an encoder with a head end to end: LoRA (rank 4 on q/k/v/o, layer norms) and full, on any mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from model_dirs import write_model_dir
from prottrans_jax import model_io
from prottrans_jax.downstream import datasets, finetune
from prottrans_jax.hf.common import flatten_params
from prottrans_jax.models.heads import LocalizationFNN, SecondaryStructureCNN


def ss_loss(out, labels, mask):
    w = mask * labels["resolved"]
    ce = optax.softmax_cross_entropy_with_integer_labels(out["dssp3"], labels["dssp3"])
    return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1)


@pytest.fixture(scope="module")
def chains(shared_data):
    return [r for r in datasets.read_netsurfp_csv(shared_data / "netsurfp" / "TS115_HHblits.csv")
            if len(r.sequence) <= 120][:16]  # BERT tiny: 128 positions


def _labels(chains):
    def make(idx, rows, length):
        out = {"dssp3": np.zeros((rows, length), np.int32), "resolved": np.zeros((rows, length), np.float32)}
        for j, i in enumerate(idx):
            n = len(chains[i].sequence)
            out["dssp3"][j, :n], out["resolved"][j, :n] = chains[i].dssp3, chains[i].resolved
        return out
    return make


@pytest.mark.parametrize("family", ("t5", "bert"))
def test_lora_trains_adapters_and_norms_only(tmp_path, chains, family):
    write_model_dir(tmp_path / "lm", family)
    model = model_io.load_model(tmp_path / "lm")
    tuner = finetune.Finetuner(model, SecondaryStructureCNN(), ss_loss,
                               finetune.FinetuneConfig(mode="lora", rank=4, learning_rate=3e-3, batch_size=8),
                               mesh_shape={"data": 8})
    base_before = jax.device_get(tuner.frozen)
    lora_paths = sorted(tuner.lora)
    assert all(p.endswith(("query/kernel", "key/kernel", "value/kernel", "out/kernel")) for p in lora_paths)
    assert len(lora_paths) == 4 * 2  # q, k, v, o in each of the 2 layers
    seqs = [c.sequence for c in chains]
    rng, key = np.random.default_rng(0), jax.random.key(0)
    first = np.mean(tuner.train_epoch(seqs, _labels(chains), rng, key))
    for epoch in range(4):
        last = np.mean(tuner.train_epoch(seqs, _labels(chains), rng, jax.random.key(epoch + 1)))
    assert last < first
    for a, b in zip(jax.tree_util.tree_leaves(base_before), jax.tree_util.tree_leaves(jax.device_get(tuner.frozen))):
        np.testing.assert_array_equal(a, b)  # the base weights stay frozen
    trained_norms = flatten_params(jax.device_get(tuner.state["encoder"]))
    assert trained_norms and all("norm" in k or "LayerNorm" in k for k in trained_norms)
    assert any(np.abs(np.asarray(b)).max() > 0 for _, b in jax.device_get(tuner.lora).values())
    total = sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(model.params))
    encoder_trained = sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(
        (tuner.state["encoder"], tuner.state["lora"])))
    assert encoder_trained < 0.25 * total
    merged = flatten_params(finetune.merged_encoder_params(tuner))
    path = lora_paths[0]
    a, b = jax.device_get(tuner.lora[path])
    np.testing.assert_allclose(merged[path], flatten_params(base_before)[path] + a @ b * tuner.scale, atol=1e-6)


def test_full_finetuning_and_the_mesh_does_not_change_the_result(tmp_path, chains):
    write_model_dir(tmp_path / "lm", "t5")
    model = model_io.load_model(tmp_path / "lm")
    seqs = [c.sequence for c in chains]
    outputs = []
    for mesh, devices in (({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1]), ({"data": 2, "model": 4}, None)):
        tuner = finetune.Finetuner(model, SecondaryStructureCNN(dropout_rate=0.0), ss_loss,
                                   finetune.FinetuneConfig(mode="full", learning_rate=1e-3, batch_size=8),
                                   mesh_shape=mesh, rules="model", devices=devices)
        tuner.train_epoch(seqs, _labels(chains), np.random.default_rng(0), jax.random.key(0))
        outputs.append(tuner.predict(seqs[:3]))
    for a, b in zip(*outputs):
        np.testing.assert_allclose(a["dssp3"], b["dssp3"], atol=2e-5)


def test_per_protein_finetuning_with_the_fnn(tmp_path, shared_data):
    write_model_dir(tmp_path / "lm", "t5")
    records = [r for r in datasets.read_deeploc_fasta(shared_data / "deeploc" / "deeploc_our_val_set.fasta")
               if len(r.sequence) < 150][:16]

    def loss(out, labels, mask):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out["location"], labels["location"]))

    def make(idx, rows, length):
        loc = np.zeros(rows, np.int32)
        loc[:len(idx)] = [records[i].location for i in idx]
        return {"location": loc}

    tuner = finetune.Finetuner(model_io.load_model(tmp_path / "lm"), LocalizationFNN(), loss,
                               finetune.FinetuneConfig(learning_rate=3e-3), mesh_shape={"data": 8})
    seqs = [r.sequence for r in records]
    losses = [np.mean(tuner.train_epoch(seqs, make, np.random.default_rng(e), jax.random.key(e))) for e in range(4)]
    assert losses[-1] < losses[0]
    probs = tuner.predict(seqs)
    assert probs[0]["location"].shape == (10,) and abs(probs[0]["location"].sum() - 1) < 1e-5


def test_too_long_for_the_positions_is_refused(tmp_path, shared_data):
    write_model_dir(tmp_path / "lm", "bert")
    tuner = finetune.Finetuner(model_io.load_model(tmp_path / "lm"), SecondaryStructureCNN(), ss_loss)
    with pytest.raises(ValueError, match="128 positions"):
        next(tuner.batches(["M" * 200]))
