"""A trainer checkpoint goes through export-hf, transformers (torch) and import-hf unchanged; training resumes on it."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import torch  # noqa: E402  (a test requirement: a broken install fails, never skips)
import transformers  # noqa: E402

from hf_loading import load_clean  # noqa: E402

import prottrans_jax_tasks  # noqa: E402
from model_dirs import write_model_dir  # noqa: E402
from proteins import read_proteins  # noqa: E402
from prottrans_jax import cli, model_adapters, model_io, train  # noqa: E402
from prottrans_jax.hf import checkpoint_reader  # noqa: E402
from prottrans_jax.hf.common import flatten_params  # noqa: E402
from prottrans_jax.models.t5 import T5EncoderDecoder  # noqa: E402
from prottrans_jax.vocab import ProtT5Vocabulary  # noqa: E402


@pytest.fixture(scope="module")
def real_task(demo_corpus):
    prottrans_jax_tasks.register_fasta_tasks("imdemo", str(demo_corpus), objectives=("prot_t5_denoise",))
    return "imdemo_prot_t5_denoise"


LENGTHS = {"inputs": 64, "targets": 64}


def _gin_args(model_dir, task, steps, extra=()):
    return ["--gin_file=runs/prot_t5_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
            f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}", f"--gin.TRAIN_STEPS={steps}",
            "--gin.BATCH_SIZE=8", "--gin.train_script.train.async_checkpoints=False",
            "--gin.train_script.train.checkpoint_every=100", "--gin.train_script.train.peak_flops_per_device=0",
            "--gin.train_script.train.log_every=1", *extra]


def _assert_same_params(a, b):
    fa, fb = flatten_params(a), flatten_params(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def _batch(demo_corpus):
    vocab = ProtT5Vocabulary()
    rows = [list(vocab.encode(s[:40])) + [1] for s in read_proteins(demo_corpus, 3)]
    enc = np.zeros((3, 41), np.int32)
    for r, row in enumerate(rows):
        enc[r, :len(row)] = row
    dec_in = np.concatenate([np.zeros((3, 1), np.int32), enc[:, :-1]], axis=1)
    return enc, dec_in, enc


def test_trainer_checkpoint_round_trips_through_transformers(tmp_path, real_task, demo_corpus, capsys):
    run, hf1, hf2, imported = (tmp_path / n for n in ("run", "hf", "hf_resaved", "imported"))
    assert train.main(_gin_args(run, real_task, 3)) == 0
    trained = model_io.load_model(run)
    assert trained.step == 3
    assert cli.main(["export-hf", "--checkpoint", str(run), "--out", str(hf1)]) == 0

    # transformers gives our logits on real proteins, then saves the model its own way.
    hf = load_clean(transformers.T5ForConditionalGeneration, hf1)
    enc, dec_in, target = _batch(demo_corpus)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(enc, dtype=torch.long), attention_mask=torch.tensor(enc > 0),
                 decoder_input_ids=torch.tensor(dec_in, dtype=torch.long)).logits.numpy()
    ours = T5EncoderDecoder(trained.config).apply({"params": trained.params}, enc, dec_in, target,
                                                  enable_dropout=False)
    valid = target > 0
    assert float(np.max(np.abs(np.asarray(ours) - ref)[valid])) < 1e-4
    hf.save_pretrained(hf2)

    assert cli.main(["import-hf", "--hf", str(hf2), "--out", str(imported)]) == 0
    printed = capsys.readouterr().out
    assert "prot_t5_tiny" in printed and "checkpoint_0" in printed
    back = model_io.load_model(imported)
    assert back.architecture == "T5ForConditionalGeneration" and back.step == 0
    _assert_same_params(back.params, trained.params)


def _distance(a, b):
    """Euclidean distance between two parameter trees with the same names."""
    fa, fb = flatten_params(a), flatten_params(b)
    assert fa.keys() == fb.keys()
    return float(np.sqrt(sum(np.sum((np.asarray(fa[k], np.float64) - np.asarray(fb[k])) ** 2) for k in fa)))


def test_training_starts_from_the_imported_weights(tmp_path, real_task, capsys):
    """Weights unlike any fresh init (seed 3, every leaf perturbed) go HF -> import-hf -> two trainer steps."""
    config, source = write_model_dir(tmp_path / "src", "t5", seed=3)
    assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "src"), "--out", str(tmp_path / "hf")]) == 0
    assert cli.main(["import-hf", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imp")]) == 0
    capsys.readouterr()
    assert train.main(_gin_args(tmp_path / "imp", real_task, 2)) == 0
    assert "starting from the weights imported" in capsys.readouterr().out
    trained = model_io.load_model(tmp_path / "imp")
    assert trained.step == 2
    # What this run would have started from without the import: the trainer's own init for seed 0.
    module, _, init_inputs = model_adapters.adapt(config, "prot_t5_denoise", LENGTHS)
    params_key = jax.random.split(jax.random.key(0))[0]
    fresh = jax.jit(lambda k: module.init(k, **init_inputs)["params"])(params_key)
    apart = _distance(source, fresh)
    moved, from_fresh = _distance(trained.params, source), _distance(trained.params, fresh)
    assert 0 < moved < 0.1 * apart, (moved, apart)  # two small steps away from the imported weights
    assert from_fresh > 0.9 * apart, (from_fresh, apart)  # and nowhere near a fresh init


def test_a_run_of_another_model_refuses_imported_weights(tmp_path, real_task, capsys):
    write_model_dir(tmp_path / "run", "t5")
    assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert cli.main(["import-hf", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imp")]) == 0
    capsys.readouterr()
    bigger = ["--gin.configs.get_config.d_ff=128"]
    assert train.main(_gin_args(tmp_path / "imp", real_task, 1, bigger)) == 2
    err = capsys.readouterr().err
    assert "d_ff: 64 saved vs 128 asked" in err and "imp" in err
    assert sorted(checkpoint_reader.finished_step_dirs(str(tmp_path / "imp"))) == [0]  # nothing written


@pytest.mark.parametrize("family", ("bert", "albert", "electra"))
def test_encoder_families_round_trip(tmp_path, family):
    """Ours -> HF folder -> import-hf -> ours, bit for bit (ELECTRA: generator and discriminator together)."""
    config, params = write_model_dir(tmp_path / "run", family)
    assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert cli.main(["import-hf", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imp")]) == 0
    back = model_io.load_model(tmp_path / "imp")
    assert back.architecture == model_io.ARCHITECTURE_OF_CONFIG[type(config)]
    _assert_same_params(back.params, params)


def test_import_refuses_an_existing_run_and_other_families(tmp_path, capsys):
    write_model_dir(tmp_path / "run", "bert")
    assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert cli.main(["import-hf", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert cli.main(["import-hf", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "x"), "--family", "t5"]) == 2
    assert "not a t5 model" in capsys.readouterr().err
    assert cli.main(["import-hf", "--hf", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2
    assert "no config.json" in capsys.readouterr().err
