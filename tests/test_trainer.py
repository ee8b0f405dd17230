"""Trainer on 8 fake CPU devices with the real demo corpus: learning, meshes, microbatching, resume, gin errors."""

import itertools
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import prottrans_jax_tasks
from prottrans_jax import alphabet, model_adapters, objectives, optimizers, partitioning, train, trainer as trainer_lib
from prottrans_jax import training_loop
from prottrans_jax.hf import checkpoint_reader
from prottrans_jax.models import configs

LENGTHS = {"inputs": 64, "targets": 64}
TMP_CHECKPOINT = re.compile(r"checkpoint_(\d+)\.orbax-checkpoint-tmp.*")  # a save in flight


@pytest.fixture(scope="module")
def real_task(demo_corpus):
    prottrans_jax_tasks.register_fasta_tasks("trdemo", str(demo_corpus), objectives=("prot_t5_denoise",))
    return "trdemo_prot_t5_denoise"


def _trainer(mesh_shape, rules="data", num_microbatches=1, lr=3e-3, **config_overrides):
    config = configs.get_config("prot_t5_tiny", **config_overrides)
    module, logits_fn, init_inputs = model_adapters.adapt(config, "prot_t5_denoise", LENGTHS)
    schedule = optimizers.make_schedule("constant", lr)
    return trainer_lib.Trainer(
        module=module, logits_fn=logits_fn, objective=objectives.EncoderDecoderObjective(z_loss=1e-4),
        optimizer=optimizers.make_optimizer("adamw", schedule), mesh=partitioning.make_mesh(mesh_shape),
        rules=rules, init_inputs=init_inputs, num_microbatches=num_microbatches, learning_rate_fn=schedule,
    )


def _batches(task, n, batch_size=16, seed=0):
    it = training_loop.host_batches(task, LENGTHS, batch_size, "train", seed, pack=False)
    return list(itertools.islice(it, n))


def _losses(trainer, batches, seed=0):
    state = trainer.init_state(seed)
    losses = []
    for batch in batches:
        state, metrics = trainer.train_step(state, training_loop.to_global(batch, trainer.batch_sharding))
        losses.append(float(metrics["loss"]))
    return state, np.array(losses)


def test_tiny_t5_learns_on_real_proteins(real_task):
    batches = _batches(real_task, 40)
    _, losses = _losses(_trainer({"data": 8}, lr=1e-2), batches)
    assert np.isfinite(losses).all()
    # ln(128) = 4.85 at init; after 40 steps the model predicts residues far better than uniform.
    assert losses[:5].mean() > 4.0 and losses[-5:].mean() < losses[:5].mean() - 1.0, losses


def test_same_trajectory_under_data_model_and_fsdp_parallel(real_task):
    batches = _batches(real_task, 6)
    state_dp, dp = _losses(_trainer({"data": 8}, "data"), batches)
    for mesh_shape, rules in [({"data": 2, "model": 4}, "model"), ({"data": 2, "fsdp": 2, "model": 2}, "fsdp")]:
        state, losses = _losses(_trainer(mesh_shape, rules), batches)
        np.testing.assert_allclose(losses, dp, rtol=2e-4, atol=2e-4, err_msg=rules)
        spec = str(state.params["encoder"]["layers_0"]["mlp"]["wi"]["kernel"].sharding.spec)  # [embed, mlp]
        assert rules in spec, f"{rules} rules really shard the MLP kernel over '{rules}': {spec}"
        # Parameters and optimizer state too (they differ by ~1e-6 after 6 steps: reduction order).
        _assert_same_state({"params": state_dp.params, "opt_state": state_dp.opt_state},
                           {"params": state.params, "opt_state": state.opt_state}, atol=1e-5)


def test_microbatching_equals_the_large_batch(real_task):
    batches = _batches(real_task, 2)
    state_1, l1 = _losses(_trainer({"data": 8}, num_microbatches=1), batches)
    state_4, l4 = _losses(_trainer({"data": 8}, num_microbatches=4), batches)
    np.testing.assert_allclose(l1, l4, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(state_1.params), jax.tree_util.tree_leaves(state_4.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)


def _gin_args(model_dir, steps, extra=()):
    return [
        "--gin_file=runs/prot_t5_tiny.gin",
        f"--gin.MODEL_DIR='{model_dir}'",
        "--gin.MIXTURE_OR_TASK_NAME='trdemo_prot_t5_denoise'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 64}",
        f"--gin.TRAIN_STEPS={steps}",
        "--gin.BATCH_SIZE=8",
        "--gin.train_script.train.checkpoint_every=4",
        "--gin.train_script.train.log_every=2",
        "--gin.train_script.train.async_checkpoints=False",
        "--gin.configs.get_config.dropout_rate=0.1",
        "--gin.train_script.train.peak_flops_per_device=0",  # no MFU estimate (saves a compile)
        *extra,
    ]


def _params_at(model_dir):
    from prottrans_jax import checkpoints

    ckpt = checkpoints.TrainCheckpointer(str(model_dir))
    state, meta = ckpt.restore()
    ckpt.close()
    return state, meta


def _start_training(demo_corpus, args):
    """A training process of its own (stdout piped) that can be signalled or killed."""
    worker = (
        "import sys, prottrans_jax_tasks; from prottrans_jax import train; "
        f"prottrans_jax_tasks.register_fasta_tasks('trdemo', {str(demo_corpus)!r}, objectives=('prot_t5_denoise',)); "
        "sys.exit(train.main(sys.argv[1:]))"
    )
    return subprocess.Popen([sys.executable, "-c", worker, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=train.GIN_DIR)


def _lines_until(proc, prefix):
    """The process's stdout lines up to the first that starts with ``prefix``."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"training ended before {prefix!r}: {''.join(lines)[-2000:]}")


def _train_steps_logged(lines):
    return [int(line.split("]")[0].split()[-1]) for line in lines if line.startswith("[train step ")]


def _sigkill_while_saving(proc, model_dir, timeout_s=300):
    """SIGKILLs ``proc`` the moment an Orbax temporary checkpoint directory appears; returns that directory's name."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        writing = [n for n in os.listdir(model_dir) if TMP_CHECKPOINT.fullmatch(n)]
        if writing:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
            return writing[0]
    proc.kill()
    raise AssertionError("no checkpoint write was seen in flight")


def _assert_same_state(a, b, atol=1e-6):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, err_msg=jax.tree_util.keystr(path))


def test_preempted_and_killed_run_resumes_and_equals_uninterrupted(real_task, tmp_path, demo_corpus, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ["--gin.EVAL_EVERY=5", "--gin.train_script.train.eval_batches=2",
             "--gin.train_script.train.peak_flops_per_device=None"]
    assert train.main(_gin_args(full, 10, extra)) == 0
    out = capsys.readouterr().out
    assert "[eval step 5]" in out and "targets/accuracy" in out and "tokens_per_s" in out
    assert f"last checkpoint: {full / 'checkpoint_10'} (step 10)" in out
    mfu = float(out.split("mfu=")[1].split()[0])
    assert 0 < mfu < 1, "MFU against the measured matmul peak of this CPU"
    assert list((full / "tensorboard").iterdir()), "TensorBoard event files are written"

    # 1. A real SIGTERM (TPU preemption) to a training process: it saves where it is and exits cleanly.
    proc = _start_training(demo_corpus, _gin_args(part, 1000, ["--gin.train_script.train.log_every=1"]))
    _lines_until(proc, "[train step 3]")
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, rest
    preempted_at = max(checkpoint_reader.finished_step_dirs(str(part)))
    assert 3 <= preempted_at < 6, preempted_at

    # 2. A second process resumes there, saves every step asynchronously and is SIGKILLed while a save is in flight.
    proc = _start_training(demo_corpus, _gin_args(part, 1000, [
        "--gin.train_script.train.log_every=1", "--gin.train_script.train.checkpoint_every=1",
        "--gin.train_script.train.async_checkpoints=True", "--gin.train_script.train.keep_checkpoints=100"]))
    lines = _lines_until(proc, f"[train step {preempted_at + 2}]")
    assert f"resumed from {part} at step {preempted_at}\n" in lines, lines
    assert _train_steps_logged(lines) == [preempted_at + 1, preempted_at + 2]
    half = _sigkill_while_saving(proc, part)
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(TMP_CHECKPOINT.fullmatch(half).group(1))
    finished = checkpoint_reader.finished_step_dirs(str(part))
    assert (part / half).is_dir(), "the kill landed after the write it interrupted had finished"
    assert killed_at not in finished and max(finished) == killed_at - 1 < 10, (half, sorted(finished))
    # Only finished checkpoints carry a step directory's name; the half-written one keeps Orbax's temporary name.
    named = {int(n.split("_")[1]) for n in os.listdir(part) if re.fullmatch(r"checkpoint_\d+", n)}
    assert named == set(finished), (sorted(os.listdir(part)), sorted(finished))

    # 3. The rerun resumes from the last finished checkpoint, clears the half one and ends where the full run did.
    # (checkpoint_every=100: the rerun writes only step 10, so nothing but the cleanup can remove the half one)
    assert train.main(_gin_args(part, 10, ["--gin.train_script.train.log_every=1",
                                           "--gin.train_script.train.checkpoint_every=100"])) == 0
    out = capsys.readouterr().out
    assert f"resumed from {part} at step {killed_at - 1}\n" in out, out
    assert _train_steps_logged(out.splitlines()) == list(range(killed_at, 11))
    assert not [n for n in os.listdir(part) if TMP_CHECKPOINT.fullmatch(n)], "temporaries of killed saves are removed"
    (a, meta_a), (b, meta_b) = _params_at(full), _params_at(part)
    assert int(a["step"]) == int(b["step"]) == 10 and meta_a["data_position"] == meta_b["data_position"] == 10
    assert jax.tree_util.tree_leaves(a["opt_state"]), "the optimizer state is compared too"
    _assert_same_state(a, b)  # params, optimizer state, dropout key and step


def test_resume_with_an_incompatible_config_is_refused(real_task, tmp_path, capsys):
    assert train.main(_gin_args(tmp_path, 2)) == 0
    rc = train.main(_gin_args(tmp_path, 4, ["--gin.configs.get_config.d_ff=128"]))
    err = capsys.readouterr().err
    assert rc == 2 and "d_ff" in err and str(tmp_path) in err


@pytest.mark.parametrize(
    "flag,needle",
    [
        ("--gin.train_script.train.bogus_option=3", "bogus_option"),
        ("--gin.MIXTURE_OR_TASK_NAME='no_such_task_prot_t5_denoise'", "no_such_task"),
        ("--learning_rate=3", "unknown flag"),
        ("--gin.BATCH_SIZE=4", "BATCH_SIZE 4 does not divide over the 8 devices"),
    ],
)
def test_bad_bindings_fail_fast_with_a_clear_message(tmp_path, capsys, flag, needle, real_task):
    args = _gin_args(tmp_path, 2) + [flag]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("prottrans_jax.train: error:") and needle in err and "Traceback" not in err
    assert not (tmp_path / "checkpoint_2").exists()


def test_missing_required_binding(tmp_path, capsys):
    assert train.main(["--gin_file=runs/prot_t5_tiny.gin"]) == 2
    assert "MODEL_DIR" in capsys.readouterr().err


def _encoder_trainer(name, objective, lr=3e-3, mesh_shape=None):
    config = configs.get_config(name)
    lengths = {"inputs": 64, "targets": 64, "loss_weights": 64}
    module, logits_fn, init_inputs = model_adapters.adapt(config, objective, lengths)
    schedule = optimizers.make_schedule("constant", lr)
    objective_obj = objectives.OBJECTIVE_FOR_TASK[objective]()
    return trainer_lib.Trainer(
        module=module, logits_fn=logits_fn, objective=objective_obj,
        optimizer=optimizers.make_optimizer("adamw", schedule), mesh=partitioning.make_mesh(mesh_shape or {"data": 8}),
        rules="data", init_inputs=init_inputs, learning_rate_fn=schedule,
    ), lengths


@pytest.fixture(scope="module")
def real_mlm_tasks(demo_corpus):
    return prottrans_jax_tasks.register_fasta_tasks("trmlm", str(demo_corpus), objectives=("bert_mlm", "electra"))


def test_tiny_bert_learns_on_real_proteins(real_mlm_tasks):
    trainer, lengths = _encoder_trainer("prot_bert_tiny", "bert_mlm", lr=1e-2)
    batches = list(itertools.islice(training_loop.host_batches("trmlm_bert_mlm", lengths, 32, "train", 0, False), 40))
    _, losses = _losses(trainer, batches)
    # ln(30) = 3.40 at init; the residue composition alone brings MLM loss near 2.95 nats.
    assert losses[:3].mean() > 3.2 and losses[-5:].mean() < 3.05, losses


def test_electra_objective_shows_the_discriminator_the_generator_samples():
    """Hand-checked: the discriminator reads the generator's samples at selected positions and originals elsewhere."""
    targets = np.array([[2, 5, 6, 7, 8, 3, 0, 0], [2, 7, 7, 9, 3, 0, 0, 0]], np.int32)  # 11 real tokens
    selected = np.array([[0, 1, 0, 1, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0, 0, 0]], np.float32)
    batch = {"encoder_input_tokens": np.where(selected > 0, alphabet.PROT_BERT_MASK_ID, targets),
             "encoder_target_tokens": targets, "encoder_loss_weights": selected}
    seen = {}

    def logits_fn(params, b, rng):
        generator_logits = 1e4 * jax.nn.one_hot(np.full(targets.shape, 7), 30)  # [b, l, vocab]: always samples 7

        def discriminate(tokens):  # [b, l] -> [b, l]: "replaced" wherever it reads a 7
            seen["tokens"] = np.asarray(tokens)
            return jnp.where(tokens == 7, 10.0, -10.0)

        return generator_logits, discriminate

    objective = objectives.ElectraObjective()
    _, sums = objective.loss(logits_fn, None, batch, jax.random.key(0), objective.normalizers(batch))
    np.testing.assert_array_equal(seen["tokens"], np.where(selected > 0, 7, targets))
    # Wrong only where it reads a 7 that is original: a 7 sampled over a 7 (twice) and the unselected 7 of row 2.
    assert float(sums["discriminator_weight_sum"]) == 11 and float(sums["discriminator_correct_sum"]) == 8
    assert float(sums["discriminator_loss_sum"]) == pytest.approx(3 * 10 + 11 * np.log1p(np.exp(-10.0)), rel=1e-5)


def _discriminator_on_inserted_tokens(trainer, params, batch, rng):
    """Discriminator logits and labels at residue positions after 15% of them are replaced by tokens no protein has.

    [UNK] and U, B, Z, O (which the pipeline maps to X) are a fifth of what an untrained generator samples.
    """
    targets = batch["encoder_target_tokens"]
    residue = targets >= 5
    inserted = residue & (rng.random(targets.shape) < 0.15)
    never_seen = [alphabet.PROT_BERT_UNK_ID] + [alphabet.prot_bert_residue_ids()[aa] for aa in "UBZO"]
    tokens = np.where(inserted, rng.choice(never_seen, targets.shape), targets)
    _, discriminate = trainer.logits_fn(params, batch, jax.random.key(0), False)
    return np.asarray(discriminate(tokens))[residue], inserted[residue]


def test_electra_trains_generator_and_discriminator(real_mlm_tasks):
    trainer, lengths = _encoder_trainer("prot_electra_tiny", "electra", lr=3e-3)
    it = training_loop.host_batches("trmlm_electra", lengths, 16, "train", 0, False)
    batches, held_out = list(itertools.islice(it, 12)), list(itertools.islice(it, 4))
    state = trainer.init_state(0)
    first = last = None
    for batch in batches:
        state, metrics = trainer.train_step(state, training_loop.to_global(batch, trainer.batch_sharding))
        summary = objectives.summarize({k: np.asarray(v) for k, v in metrics.items() if k.endswith("_sum")})
        first = first or summary
        last = summary
    assert np.isfinite(float(metrics["loss"]))
    assert last["generator/loss"] < first["generator/loss"]
    assert set(state.params) == {"embeddings", "generator", "discriminator"}, "one shared embedding block"
    # "discriminator/accuracy" cannot show learning: answering "original" everywhere scores ~87%, and in 12 steps
    # a tiny discriminator does no better on the generator's plausible residues. What it must have learnt is to
    # flag the tokens the untrained generator inserted, on proteins it has not seen.
    rng = np.random.default_rng(0)
    logits, inserted = map(np.concatenate, zip(*(_discriminator_on_inserted_tokens(trainer, state.params, b, rng)
                                                 for b in held_out)))
    assert inserted.sum() > 200
    assert roc_auc_score(inserted, logits) > 0.9, "replaced tokens score above original ones"


def test_schedules_and_optimizers():
    rsqrt = optimizers.make_schedule("rsqrt", 0.01, warmup_steps=100)
    assert float(rsqrt(0)) == float(rsqrt(100)) == pytest.approx(0.01)
    assert float(rsqrt(400)) == pytest.approx(0.005)
    linear = optimizers.make_schedule("linear", 1.0, warmup_steps=10, total_steps=110)
    assert [float(linear(s)) for s in (0, 5, 10, 60, 110)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    cosine = optimizers.make_schedule("cosine", 1.0, warmup_steps=10, total_steps=110)
    assert float(cosine(10)) == pytest.approx(1.0) and float(cosine(60)) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="total_steps"):
        optimizers.make_schedule("cosine", 1.0, warmup_steps=10)
    params = {"w": jax.numpy.ones((256, 256)), "b": jax.numpy.ones((256,))}
    grads = jax.tree_util.tree_map(lambda x: 100.0 * x, params)
    for name in optimizers.OPTIMIZERS:
        opt = optimizers.make_optimizer(name, optimizers.make_schedule("constant", 1e-3), clip_norm=1.0)
        updates, _ = opt.update(grads, opt.init(params), params)
        assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree_util.tree_leaves(updates))
        assert float(optimizers.optax.global_norm(updates)) > 0
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers.make_optimizer("sgdd")
