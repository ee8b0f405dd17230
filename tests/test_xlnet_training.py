"""XLNet permutation LM: example structure and rates on the real demo corpus, seeds, k, padding side, training."""

import itertools
import shutil

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

import prottrans_jax_tasks
from binomial import assert_binomial_rate
from prottrans_jax import (model_adapters, objectives, optimizers, partitioning, permutation_lm_data, pipeline, train,
                           trainer as trainer_lib, training_loop, xlnet_vocab)
from prottrans_jax.models import configs, xlnet
from test_trainer import _assert_same_state, _losses, _params_at

VOCAB = xlnet_vocab.get_xlnet_vocabulary()
WINDOW = 128
LENGTHS = permutation_lm_data.feature_lengths(WINDOW, 6.0)  # {'inputs': 128, 'targets': 21}


@pytest.fixture(scope="module")
def task(demo_corpus):
    prottrans_jax_tasks.register_fasta_tasks("xlreal", str(demo_corpus), validation_fraction=0.0,
                                             objectives=("xlnet_plm",))
    return "xlreal_xlnet_plm"


def _examples(task, n_batches=None, seed=0, shuffle=True, lengths=LENGTHS, batch_size=256):
    ds = pipeline.get_dataset(task, batch_size=batch_size, seed=seed, shuffle=shuffle, num_epochs=1,
                              feature_lengths=lengths)
    batches = list(itertools.islice(pipeline.numpy_batches(ds), n_batches))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.fixture(scope="module")
def corpus_examples(task):
    """The real demo corpus as windows of 128 (14,336 of its 14,400 proteins: whole batches of 256).

    Only the first 2,048 perm_masks are kept (each window's is 16 KB).
    """
    ex = _examples(task)
    ex["perm_mask"] = ex["perm_mask"][:2048].copy()  # [examples, L, L] int8
    return ex


def _target_positions(ex):
    """[examples, P] position of each target row (-1 on padded rows)."""
    return np.where(ex["target_weights"] > 0, np.argmax(ex["target_mapping"], axis=-1), -1)


# ---------------------------------------------------------------------------------------
# Rates and structure over the whole real corpus.
# ---------------------------------------------------------------------------------------


def test_partial_prediction_rate_and_spread(corpus_examples):
    ex = corpus_examples
    assert len(ex["target_weights"]) > 14_000
    residues = ex["attention_mask"].sum(1) - 2  # [examples]: <sep> <cls> are not residues
    predicted = ex["target_weights"].sum(1)
    # Exactly round(n / 6) (at least one) residues of each window, and so about 1/6 of all of them.
    np.testing.assert_array_equal(predicted, np.clip(np.round(residues / 6.0), 1, residues))
    assert_binomial_rate(predicted.sum(), residues.sum(), 1 / 6, "predicted fraction", max_relative=0.02)
    # Targets are spread uniformly over each window: half of them fall in the first half of its residues
    # (windows of an even number of residues, which have a middle).
    pos = _target_positions(ex)
    counted = (residues % 2 == 0)[:, None] & (pos >= 0)
    assert_binomial_rate(((pos < residues[:, None] // 2) & counted).sum(), counted.sum(), 0.5, "first-half targets")


def test_layout_padding_and_targets(corpus_examples):
    ex = corpus_examples
    tokens, mask = ex["encoder_input_tokens"], ex["attention_mask"]
    real = mask.sum(1)  # [examples]
    pos = np.arange(WINDOW)[None, :]
    np.testing.assert_array_equal(mask, (pos < real[:, None]).astype(np.int32), "mask: a prefix of real tokens")
    rows = np.arange(len(tokens))
    assert (tokens[rows, real - 2] == VOCAB.sep_id).all() and (tokens[rows, real - 1] == VOCAB.cls_id).all()
    assert (tokens[pos >= real[:, None]] == VOCAB.pad_id).all(), "right padding with <pad>"
    residue = pos < (real - 2)[:, None]
    assert np.isin(tokens[residue], [VOCAB.unk_id, *VOCAB.residue_ids]).all()
    # Target rows: one-hot on a residue (never <sep>, <cls> or padding), ascending, reading that residue;
    # padded rows are all zero with weight 0.
    tm, weights = ex["target_mapping"], ex["target_weights"]
    assert set(np.unique(tm)) <= {0, 1} and (tm.sum(-1) == weights).all()
    tpos = _target_positions(ex)
    valid = weights > 0
    assert (tpos[valid] < np.broadcast_to((real - 2)[:, None], tpos.shape)[valid]).all()
    assert (np.where(valid[:, 1:], np.diff(tpos, axis=1), 1) > 0).all(), "targets in position order"
    np.testing.assert_array_equal(ex["target_tokens"][valid], np.take_along_axis(tokens, np.maximum(tpos, 0), 1)[valid])
    assert (ex["target_tokens"][~valid] == 0).all()


def test_perm_mask_is_a_factorisation_order(corpus_examples):
    ex = {k: v[:2048] for k, v in corpus_examples.items()}
    perm = ex["perm_mask"].astype(bool)  # [examples, L, L]: True where i may not attend to j
    tpos = _target_positions(ex)
    is_target = np.zeros(perm.shape[:2], bool)
    rows = np.repeat(np.arange(len(tpos)), tpos.shape[1]).reshape(tpos.shape)
    is_target[rows[tpos >= 0], tpos[tpos >= 0]] = True
    # Context (residues not predicted, <sep>, <cls>, padding) is visible to every token and sees no target.
    assert not (perm & ~is_target[:, None, :]).any(), "only targets are ever hidden"
    assert (perm | ~(~is_target[:, :, None] & is_target[:, None, :])).all(), "context sees no target"
    # Among targets, "i sees j" is a strict total order: a target sees exactly the targets before it.
    seen = (~perm & is_target[:, None, :]).sum(-1)  # [examples, L]: targets each token sees
    for e in range(len(perm)):
        t = np.flatnonzero(is_target[e])
        rank = seen[e, t]
        assert sorted(rank) == list(range(len(t))), "ranks 0..m-1: one target first, one last"
        sees = ~perm[e][np.ix_(t, t)]
        np.testing.assert_array_equal(sees, rank[:, None] > rank[None, :])


def test_query_stream_never_sees_itself_content_stream_does(corpus_examples):
    ex = {k: v[:8] for k, v in corpus_examples.items()}
    config = configs.get_config("prot_xlnet_tiny")
    mask_h, mask_g = xlnet.attention_masks(config, WINDOW, 0, jnp.asarray(ex["attention_mask"]),
                                           jnp.asarray(ex["perm_mask"]))
    mask_h, mask_g = np.asarray(mask_h)[:, 0] > 0, np.asarray(mask_g)[:, 0] > 0  # [batch, L, L]
    real = ex["attention_mask"].astype(bool)
    tpos = _target_positions(ex)
    for e in range(8):
        t = tpos[e][tpos[e] >= 0]
        assert mask_g[e, t, t].all() and not mask_h[e, t, t].any(), "query stream hides the token, content shows it"
        pads = np.ix_(real[e], ~real[e])  # real queries x padded keys (a padded query sees itself: unused)
        assert mask_g[e][pads].all() and mask_h[e][pads].all(), "padding is never attended"
        later = ex["perm_mask"][e][np.ix_(t, t)].astype(bool)
        assert (mask_h[e][np.ix_(t, t)] == (later & ~np.eye(len(t), dtype=bool))).all()


def test_permutation_features_predict_the_end_of_the_given_order():
    residues = tf.constant(VOCAB.encode("MKVLAAGIVGLLLAWDEQRS"), tf.int32)  # 20 residues
    order = tf.constant([4, 17, 0, 9, 12, 3, 19, 6, 1, 15, 8, 2, 11, 18, 5, 14, 7, 10, 16, 13])
    f = {k: v.numpy() for k, v in permutation_lm_data.permutation_features(
        residues, order, 24, 4.0, VOCAB.sep_id, VOCAB.cls_id, VOCAB.pad_id).items()}
    last = [14, 7, 10, 16, 13]  # round(20 / 4) = 5: the last five of the order, in that order
    positions = np.argmax(f["target_mapping"], axis=1)
    assert positions.tolist() == sorted(last)
    assert f["targets"].tolist() == [int(residues[p]) for p in sorted(last)]
    for i, p in enumerate(last):
        hidden = np.flatnonzero(f["perm_mask"][p])
        assert hidden.tolist() == sorted(last[i:]), f"target {p} sees the targets before it and itself not"
    assert f["inputs"].tolist()[20:] == [VOCAB.sep_id, VOCAB.cls_id, VOCAB.pad_id, VOCAB.pad_id]


def test_same_seed_same_examples_other_seed_other_order(task):
    a, b, c = (_examples(task, 2, seed=s, shuffle=False, batch_size=32) for s in (3, 3, 4))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    short = a["attention_mask"].sum(1) < WINDOW  # whole proteins: the same tokens under any seed
    np.testing.assert_array_equal(a["encoder_input_tokens"][short], c["encoder_input_tokens"][short])
    assert (a["target_mapping"][short] != c["target_mapping"][short]).any(axis=(1, 2)).mean() > 0.9
    assert (a["perm_mask"][short] != c["perm_mask"][short]).any(axis=(1, 2)).mean() > 0.9


def test_k_is_gin_configurable_and_lengths_are_checked(task):
    gin.clear_config()
    try:
        gin.parse_config("prottrans_jax.permutation_lm_data.permutation_lm.k = 3.0")
        lengths = permutation_lm_data.feature_lengths(64)
        assert lengths == {"inputs": 64, "targets": 21}
        ex = _examples(task, 1, lengths=lengths, batch_size=64)
        residues = ex["attention_mask"].sum(1) - 2
        np.testing.assert_array_equal(ex["target_weights"].sum(1), np.clip(np.round(residues / 3.0), 1, residues))
    finally:
        gin.clear_config()
    with pytest.raises(ValueError, match=r"TASK_FEATURE_LENGTHS\['targets'\] = 5 is too small.*set it to 10"):
        _examples(task, 1, lengths={"inputs": 64, "targets": 5})


def test_padding_side_does_not_change_the_predictions(corpus_examples):
    """XLNet's attention is relative, so right padding (training) predicts as ProtXLNet's left padding does."""
    padded = np.flatnonzero(corpus_examples["attention_mask"].sum(1) < WINDOW)[:4]  # proteins shorter than a window
    ex = {k: jnp.asarray(v[padded]) for k, v in corpus_examples.items()}
    pad = WINDOW - ex["attention_mask"].sum(1)  # [4]
    assert (pad > 0).all()
    roll = jax.vmap(lambda x, s: jnp.roll(x, s, axis=-1))  # moves the padding to the front of each row
    left = dict(ex, encoder_input_tokens=roll(ex["encoder_input_tokens"], pad), attention_mask=roll(ex["attention_mask"], pad),
                perm_mask=roll(jax.vmap(lambda x, s: jnp.roll(x, s, axis=0))(ex["perm_mask"], pad), pad),
                target_mapping=roll(ex["target_mapping"], pad))
    config = configs.get_config("prot_xlnet_tiny", initializer_range=0.5)  # large weights: positions matter
    module, logits_fn, init_inputs = model_adapters.adapt(config, "xlnet_plm", LENGTHS)
    params = module.init(jax.random.key(0), **init_inputs)["params"]
    right_logits = logits_fn(params, ex, None, False)  # [4, P, vocab]
    left_logits = logits_fn(params, left, None, False)
    np.testing.assert_allclose(left_logits, right_logits, atol=1e-4)  # measured 9e-6
    shifted = dict(ex, target_mapping=roll(ex["target_mapping"], jnp.ones_like(pad)))  # wrong rows: differ
    assert np.abs(logits_fn(params, shifted, None, False) - right_logits).max() > 1.0  # measured 8


# ---------------------------------------------------------------------------------------
# Training: learning, meshes, resume through the gin entry point.
# ---------------------------------------------------------------------------------------


def _trainer(mesh_shape, rules="data", lr=3e-3, devices=None):
    config = configs.get_config("prot_xlnet_tiny")
    module, logits_fn, init_inputs = model_adapters.adapt(config, "xlnet_plm", LENGTHS)
    schedule = optimizers.make_schedule("constant", lr)
    return trainer_lib.Trainer(
        module=module, logits_fn=logits_fn, objective=objectives.OBJECTIVE_FOR_TASK["xlnet_plm"](),
        optimizer=optimizers.make_optimizer("adamw", schedule), mesh=partitioning.make_mesh(mesh_shape, devices),
        rules=rules, init_inputs=init_inputs, learning_rate_fn=schedule,
    )


def _batches(task, n, batch_size=16):
    return list(itertools.islice(training_loop.host_batches(task, LENGTHS, batch_size, "train", 0, False), n))


def test_tiny_xlnet_learns_on_real_proteins(task):
    batches = _batches(task, 20)
    trainer = _trainer({"data": 8}, lr=1e-2)
    state, losses = _losses(trainer, batches)
    assert np.isfinite(losses).all()
    metrics = trainer.eval_step(state, training_loop.to_global(batches[-1], trainer.batch_sharding))
    assert float(metrics["plm_weight_sum"]) == batches[-1]["target_weights"].sum(), "the loss counts every target"
    # ln(37) = 3.61 at init; 20 steps reach about the residues' own frequencies (~2.9 nats on this corpus,
    # measured), far below uniform. Learning from context takes longer than a test should.
    assert losses[0] > 3.5 and losses[-5:].mean() < 3.05, losses


def test_sharded_runs_equal_the_one_device_run(task):
    batches = _batches(task, 3)
    state_1, one = _losses(_trainer({"data": 1}, devices=jax.devices()[:1]), batches)
    for mesh_shape, rules in [({"data": 8}, "data"), ({"data": 2, "model": 4}, "model")]:
        state, losses = _losses(_trainer(mesh_shape, rules), batches)
        np.testing.assert_allclose(losses, one, rtol=2e-5, atol=2e-5, err_msg=rules)
        _assert_same_state({"params": state_1.params, "opt_state": state_1.opt_state},
                           {"params": state.params, "opt_state": state.opt_state}, atol=2e-5)
    spec = str(state.params["stack"]["layers_0"]["ff"]["wi"]["kernel"].sharding.spec)  # [embed, mlp]
    assert "model" in spec, f"model rules shard the feed-forward kernel: {spec}"


def _gin_args(model_dir, steps, extra=()):
    return ["--gin_file=runs/prot_xlnet_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='xlreal_xlnet_plm'", f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=8",
            "--gin.train_script.train.checkpoint_every=2", "--gin.train_script.train.log_every=1",
            "--gin.train_script.train.async_checkpoints=False", "--gin.configs.get_config.dropout=0.1",
            "--gin.train_script.train.peak_flops_per_device=0", "--gin.WARMUP_STEPS=1", *extra]


def test_gin_run_resumes_exactly(task, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert train.main(_gin_args(full, 4)) == 0
    out = capsys.readouterr().out
    assert "[train step 4]" in out and "plm/accuracy" in out, out
    assert float(out.split("tokens_per_s=")[1].split()[0]) > 0, "window tokens are counted"
    # A run stopped after its step-2 checkpoint (same flags, so the same learning-rate schedule) resumes there.
    shutil.copytree(full, part, ignore=shutil.ignore_patterns("checkpoint_4", "tensorboard"))
    assert train.main(_gin_args(part, 4)) == 0
    out = capsys.readouterr().out
    assert f"resumed from {part} at step 2\n" in out and "[train step 3]" in out, out
    (a, meta_a), (b, meta_b) = _params_at(full), _params_at(part)
    assert int(a["step"]) == int(b["step"]) == 4 and meta_a["data_position"] == meta_b["data_position"] == 4
    assert meta_a["architecture"] == "XLNetLMHeadModel"
    assert not any("mem" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(a)[0])
    _assert_same_state(a, b)  # params, optimizer state, dropout key, step: dropout 0.1 makes the rng matter
