"""ProtTXL's causal LM: windows on the real demo corpus, the segment scan against a hand-run recurrence, meshes, resume."""

import itertools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

import prottrans_jax_tasks
from prottrans_jax import causal_lm, model_adapters, objectives, optimizers, partitioning, pipeline, train
from prottrans_jax import trainer as trainer_lib
from prottrans_jax import training_loop
from prottrans_jax.models import configs
from prottrans_jax.vocab import ProtBertVocabulary
from test_trainer import _assert_same_state, _losses, _params_at

VOCAB = ProtBertVocabulary()
CLS, SEP = VOCAB.cls_id, VOCAB.sep_id


@pytest.fixture(scope="module")
def txl_task(demo_corpus):
    return prottrans_jax_tasks.register_fasta_tasks("txldemo", str(demo_corpus), validation_fraction=0.0,
                                                    objectives=("txl_causal_lm",))[0]


def _windows(task, window, seed=0, batch_size=512, num_batches=None, **kw):
    ds = pipeline.get_dataset(task, length=window, batch_size=batch_size, seed=seed, shuffle=False, num_epochs=1, **kw)
    batches = list(itertools.islice(pipeline.numpy_batches(ds), num_batches))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _wrapped_proteins(task):
    """Every protein of the task's train split, in order, as ``[CLS] residues [SEP]`` ids."""
    source = seqio.get_mixture_or_task(task).source.get_dataset(split="train", shuffle=False)
    return [[CLS] + VOCAB.encode(s.decode()) + [SEP] for s in (x["sequence"] for x in source.as_numpy_iterator())]


# ---------------------------------------------------------------------------------------
# The pipeline on the real demo corpus (14,400 proteins; a window of 256: about half are cropped).
# ---------------------------------------------------------------------------------------


def test_windows_are_shifted_pieces_of_the_protein_cropped_uniformly(txl_task):
    window = 256
    ex = _windows(txl_task, window)
    proteins = _wrapped_proteins(txl_task)
    # batches of 512 drop the remainder: the last proteins may be left out
    assert len(ex["decoder_input_tokens"]) > 14_000 and len(proteins) == 14_400
    inputs, targets, weights = ex["decoder_input_tokens"], ex["decoder_target_tokens"], ex["decoder_loss_weights"]
    real = targets != 0
    np.testing.assert_array_equal(weights, real.astype(weights.dtype))
    np.testing.assert_array_equal(inputs != 0, real)  # inputs and targets have the same real length
    np.testing.assert_array_equal(inputs[:, 1:][real[:, 1:]], targets[:, :-1][real[:, 1:]])  # targets = inputs shifted by one
    assert not (targets == CLS).any(), "[CLS] starts a protein; it is never predicted"
    offsets, max_offsets = [], []
    for row, protein in enumerate(proteins[: len(inputs)]):
        n = int(real[row].sum())
        tokens = [int(inputs[row, 0])] + targets[row, :n].tolist()  # the window's W + 1 tokens
        if len(protein) <= window + 1:
            assert tokens == protein, f"protein {row} fits whole: every residue and [SEP] predicted once"
            continue
        assert n == window
        offset = bytes(protein).find(bytes(tokens))
        assert offset >= 0, f"window {row} is a contiguous piece of its protein, in order"
        assert (tokens[0] == CLS) == (offset == 0) and (tokens[-1] == SEP) == (offset + window + 1 == len(protein))
        offsets.append(offset)
        max_offsets.append(len(protein) - window - 1)
    offsets, max_offsets = np.array(offsets), np.array(max_offsets)
    assert len(offsets) > 5000
    # Offsets uniform on 0..M for each protein: their sum, and how often a window starts at [CLS] (offset 0).
    mean, var = max_offsets / 2, ((max_offsets + 1) ** 2 - 1) / 12
    assert abs(offsets.sum() - mean.sum()) < 5 * math.sqrt(var.sum()), (offsets.sum(), mean.sum())
    p = 1 / (max_offsets + 1)
    starts = (offsets == 0).sum()
    assert abs(starts - p.sum()) < 5 * math.sqrt((p * (1 - p)).sum()), (starts, p.sum())


def test_crops_repeat_under_a_seed_and_change_with_it(txl_task):
    first = {s: _windows(txl_task, 64, seed=s, batch_size=64, num_batches=3)["decoder_input_tokens"] for s in (1, 2)}
    again = _windows(txl_task, 64, seed=1, batch_size=64, num_batches=3)["decoder_input_tokens"]
    np.testing.assert_array_equal(first[1], again)
    assert (first[1] != first[2]).any(axis=1).mean() > 0.5, "most proteins are longer than 63: other offsets"


def test_segments_follow_the_protein_in_order(txl_task):
    ex = _windows(txl_task, 64, batch_size=32, num_batches=1)
    inputs, targets = (causal_lm.split_segments(jnp.asarray(ex[k]), 16) for k in ("decoder_input_tokens",
                                                                                 "decoder_target_tokens"))
    assert inputs.shape == (4, 32, 16)
    np.testing.assert_array_equal(np.concatenate(list(inputs), axis=1), ex["decoder_input_tokens"])
    for k in range(3):  # segment k + 1 reads the token segment k predicted last (unless the protein ended)
        goes_on = np.asarray(inputs[k + 1][:, 0]) != 0
        np.testing.assert_array_equal(inputs[k + 1][:, 0][goes_on], targets[k][:, -1][goes_on])
        assert np.isin(targets[k][:, -1][~goes_on], [SEP, 0]).all()


def test_packing_keeps_each_protein_shifted_within_its_segment(txl_task):
    ex = _windows(txl_task, 512, batch_size=8, num_batches=1, pack=True)
    seg, pos = ex["decoder_segment_ids"], ex["decoder_positions"]
    assert seg.max() > 1, "several proteins share a row"
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    np.testing.assert_array_equal(ex["decoder_input_tokens"][:, 1:][same], ex["decoder_target_tokens"][:, :-1][same])
    starts = (pos == 0) & (seg > 0)
    assert (ex["decoder_input_tokens"][starts] == CLS).mean() > 0.5, "short proteins start with [CLS]"
    np.testing.assert_array_equal(ex["decoder_loss_weights"], (seg > 0).astype(np.int32))


def test_bad_window_lengths_are_refused_clearly(txl_task):
    with pytest.raises(ValueError, match="same window"):
        pipeline.get_dataset(txl_task, feature_lengths={"inputs": 64, "targets": 32})
    with pytest.raises(ValueError, match=r"window of 64 .* segments of 24 .*SEGMENT_LENGTH"):
        causal_lm.split_segments(jnp.zeros((2, 64), jnp.int32), 24)


# ---------------------------------------------------------------------------------------
# The scan over segments equals the recurrence run by hand.
# ---------------------------------------------------------------------------------------


def _model(window, **overrides):
    # A wider init than the default sharpens attention, so that what memory adds is far above rounding.
    config = configs.get_config("prot_txl_tiny", initializer_range=0.3, **overrides)
    module, logits_fn, init_inputs = model_adapters.adapt(config, "txl_causal_lm", {"inputs": window, "targets": window})
    return module, logits_fn, jax.jit(module.init)(jax.random.key(0), **init_inputs)["params"]


def _by_hand(module, params, batch, segment_length, memory=True):
    """The loss running the segments one by one, each with the memory the previous one returned."""

    def loss_fn(p):
        mems, total = None, 0.0
        for s in range(0, batch["decoder_input_tokens"].shape[1], segment_length):
            piece = slice(s, s + segment_length)
            out = module.apply({"params": p}, batch["decoder_input_tokens"][:, piece], mems=mems)
            mems = out.mems if memory else None
            log_probs = jax.nn.log_softmax(out.logits)  # [batch, segment, vocab]
            nll = -jnp.take_along_axis(log_probs, batch["decoder_target_tokens"][:, piece, None], -1)[..., 0]
            total += jnp.sum(nll * batch["decoder_loss_weights"][:, piece])
        return total / jnp.sum(batch["decoder_loss_weights"])

    return loss_fn


@pytest.fixture(scope="module")
def real_batch(txl_task):
    batch = _windows(txl_task, 32, batch_size=4, num_batches=1)
    for k in batch:  # row 0 as a 20-token protein: padding in the last segments
        batch[k][0, 20:] = 0
    return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.mark.parametrize("segment_length,mem_len", [(8, 16), (16, 8), (16, 0)])  # memory grows, is cut, is off
def test_scan_over_segments_equals_carrying_memory_by_hand(real_batch, segment_length, mem_len):
    module, logits_fn, params = _model(32, mem_len=mem_len)
    objective = causal_lm.CausalLMObjective(segment_length=segment_length)
    normalizers = objective.normalizers(real_batch)

    def scanned(p):
        return objective.loss(lambda pp, b, k: logits_fn(pp, b, k, False), p, real_batch, jax.random.key(0), normalizers)

    by_hand = _by_hand(module, params, real_batch, segment_length)
    if segment_length == 8:  # gradients too (no gradient through memory either way)
        (loss, sums), grads = jax.jit(jax.value_and_grad(scanned, has_aux=True))(params)
        hand_loss, hand_grads = jax.jit(jax.value_and_grad(by_hand))(params)
        _assert_same_state(grads, hand_grads, atol=2e-5)
    else:
        (loss, sums), hand_loss = jax.jit(scanned)(params), jax.jit(by_hand)(params)
    np.testing.assert_allclose(float(loss), float(hand_loss), rtol=2e-6)
    assert float(sums["lm_weight_sum"]) == float(real_batch["decoder_loss_weights"].sum())
    assert int(real_batch["decoder_loss_weights"][0].sum()) == 20, "row 0 is padded in its last segments"
    np.testing.assert_allclose(float(sums["lm_loss_sum"]) / float(sums["lm_weight_sum"]), float(loss), rtol=1e-6)
    amnesic = jax.jit(_by_hand(module, params, real_batch, segment_length, memory=False))(params)
    if mem_len:
        assert abs(float(amnesic) - float(loss)) > 1e-3, "memory changes what later segments predict"
    else:
        np.testing.assert_allclose(float(amnesic), float(loss), rtol=2e-6)


# ---------------------------------------------------------------------------------------
# Training: any mesh equals one device; resume is exact.
# ---------------------------------------------------------------------------------------

LENGTHS = {"inputs": 64, "targets": 64}


def _trainer(mesh, rules):
    config = configs.get_config("prot_txl_tiny", dropout=0.1)
    module, logits_fn, init_inputs = model_adapters.adapt(config, "txl_causal_lm", LENGTHS)
    schedule = optimizers.make_schedule("constant", 3e-3)
    return trainer_lib.Trainer(
        module=module, logits_fn=logits_fn, objective=causal_lm.CausalLMObjective(segment_length=16),
        optimizer=optimizers.make_optimizer("adamw", schedule), mesh=mesh, rules=rules, init_inputs=init_inputs,
    )


def test_sharded_training_equals_one_device(txl_task):
    assert objectives.OBJECTIVE_FOR_TASK["txl_causal_lm"] is causal_lm.CausalLMObjective
    batches = list(itertools.islice(training_loop.host_batches(txl_task, LENGTHS, 16, "train", 0, False), 3))
    one, losses = _losses(_trainer(partitioning.make_mesh({"data": 1}, jax.devices()[:1]), "data"), batches)
    assert losses[-1] < losses[0]
    # Both meshes split the batch too; the resume test trains on all 8 devices data-parallel.
    for shape, rules in [({"data": 2, "model": 4}, "model"), ({"data": 2, "fsdp": 2, "model": 2}, "fsdp")]:
        state, sharded = _losses(_trainer(partitioning.make_mesh(shape), rules), batches)
        np.testing.assert_allclose(sharded, losses, rtol=2e-5, err_msg=rules)
        _assert_same_state({"params": one.params, "opt_state": one.opt_state},
                           {"params": state.params, "opt_state": state.opt_state}, atol=1e-5)
        qkv = str(state.params["stack"]["layers_0"]["attention"]["qkv"]["kernel"].sharding.spec)
        assert "model" in qkv, f"{rules} rules shard the attention heads: {qkv}"


@pytest.fixture(scope="module")
def txl_train_task(demo_corpus):
    """The demo corpus with a validation split (0.5%), for runs that evaluate."""
    return prottrans_jax_tasks.register_fasta_tasks("txltrain", str(demo_corpus), objectives=("txl_causal_lm",))[0]


def _gin_args(model_dir, steps, extra=()):
    return ["--gin_file=runs/prot_txl_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='txltrain_txl_causal_lm'", f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=8",
            "--gin.WARMUP_STEPS=1", "--gin.train_script.train.async_checkpoints=False",
            "--gin.train_script.train.log_every=1", "--gin.configs.get_config.dropout=0.1",
            "--gin.train_script.train.peak_flops_per_device=0", *extra]


def test_tiny_run_gin_trains_and_resumes_exactly(txl_train_task, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert train.main(_gin_args(full, 4, ["--gin.EVAL_EVERY=4", "--gin.train_script.train.eval_batches=2"])) == 0
    out = capsys.readouterr().out
    eval_line = next(line for line in out.splitlines() if line.startswith("[eval step 4]"))
    assert 1.0 < float(eval_line.split("lm/loss=")[1].split()[0]) < 4.0, eval_line  # held-out proteins, no dropout
    assert f"last checkpoint: {full / 'checkpoint_4'}" in out
    assert train.main(_gin_args(part, 2)) == 0
    capsys.readouterr()
    assert train.main(_gin_args(part, 4)) == 0
    out = capsys.readouterr().out
    assert f"resumed from {part} at step 2\n" in out and "[train step 3]" in out and "[train step 1]" not in out
    (a, meta_a), (b, meta_b) = _params_at(full), _params_at(part)
    assert int(a["step"]) == int(b["step"]) == 4 and meta_a["data_position"] == meta_b["data_position"] == 4
    assert meta_b["architecture"] == "TransfoXLLMHeadModel"
    _assert_same_state(a, b)  # params, optimizer state, dropout key and step: no memory needed to resume


def test_a_segment_length_not_dividing_the_window_fails_in_one_line(txl_train_task, tmp_path, capsys):
    assert train.main(_gin_args(tmp_path, 2, ["--gin.SEGMENT_LENGTH=24"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("prottrans_jax.train: error: the causal LM window of 64") and "Traceback" not in err
    assert not list(tmp_path.glob("checkpoint_*"))


def test_every_txl_size_has_a_run_gin_on_its_corpus():
    for run, task in [("prot_txl", "uniref100_txl_causal_lm"), ("prot_txl_bfd", "bfd_txl_causal_lm"),
                      ("prot_txl_tiny", "demo_txl_causal_lm")]:
        text = (pathlib.Path(train.GIN_DIR) / "runs" / f"{run}.gin").read_text()
        assert f"MIXTURE_OR_TASK_NAME = '{task}'" in text and f"models/{run}.gin" in text
