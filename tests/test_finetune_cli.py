"""``prottrans-jax finetune``: LoRA and full runs through the CLI, resume, the HF folder and head it writes, refusals."""

from __future__ import annotations

import contextlib
import io
import json

import jax
import numpy as np
import pytest
import torch
import transformers

from hf_loading import load_clean
from model_dirs import random_params, write_fasta, write_model_dir
from prottrans_jax import cli, model_io
from prottrans_jax.downstream import datasets, finetune, finetune_cli
from prottrans_jax.hf import export
from prottrans_jax.models import configs

CROP = 40


def _run(argv) -> tuple[int, str, str]:
    """``cli.main(argv)`` with its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data):
    """A tiny ProtT5 training directory and 16 TS115 chains as a NetSurfP CSV."""
    root = tmp_path_factory.mktemp("finetune")
    write_model_dir(root / "lm", "t5")
    lines = (shared_data / "netsurfp" / "TS115_HHblits.csv").read_text().splitlines()
    (root / "ss.csv").write_text("\n".join(lines[:17]) + "\n")
    return root


def _lora_argv(root, out, epochs, *extra):
    return ["finetune", "--model", str(root / "lm"), "--task", "secondary-structure", "--data", str(root / "ss.csv"),
            "--out", str(out), "--epochs", str(epochs), "--max-length", str(CROP), "--val-fraction", "0.25",
            "--lr", "3e-3", "--no-progress", *extra]


@pytest.fixture(scope="module")
def lora_run(inputs):
    """One epoch on every device data-parallel, then the same command with --epochs 2 on a 2 x 4 mesh: it resumes."""
    out = inputs / "lora"
    first = _run(_lora_argv(inputs, out, 1))
    second = _run(_lora_argv(inputs, out, 2, "--mesh", "data=2,model=4"))
    return out, first, second


@pytest.fixture(scope="module")
def uninterrupted(inputs):
    """The same two epochs in one go, data-parallel."""
    out = inputs / "uninterrupted"
    assert _run(_lora_argv(inputs, out, 2))[0] == 0
    return out


def _hf_weights(folder) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_a_run_resumed_on_another_mesh_equals_an_uninterrupted_one(lora_run, uninterrupted):
    out, (rc1, text1, _), (rc2, text2, _) = lora_run
    assert rc1 == 0 and rc2 == 0
    assert "resuming" not in text1
    assert f"resuming from {out / 'checkpoints' / 'checkpoint_1'}: 1 epoch(s) done" in text2
    assert "[epoch 1]" not in text2 and "[epoch 2]" in text2 and "mesh {'data': 2, 'fsdp': 1, 'model': 4}" in text2
    ours, theirs = (json.loads((d / "history.json").read_text()) for d in (out, uninterrupted))
    assert [h["epoch"] for h in ours] == [1, 2]
    for a, b in zip(ours, theirs):
        for key in ("train_loss", "val_loss", "val_q3", "val_q8"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
    resumed, uninterrupted = _hf_weights(out / "hf"), _hf_weights(uninterrupted / "hf")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        np.testing.assert_allclose(resumed[name], uninterrupted[name], atol=1e-5, err_msg=name)
    for name in ("report.md", "scores.json", "learning_curves.png", "confusion_Q3.png"):
        assert (out / name).is_file()
    assert "Q3" in (out / "report.md").read_text()


@pytest.fixture(scope="module")
def best(lora_run):
    """The Finetuner of the best epoch, restored from its checkpoint, and the head's head.json."""
    info = json.loads((lora_run[0] / "head" / "head.json").read_text())
    return finetune_cli.restore(lora_run[0], epoch=info["epoch"])[0], info


def test_the_hf_folder_is_the_finetuned_encoder_with_lora_merged(lora_run, best, inputs):
    out, (tuner, info) = lora_run[0], best
    model = load_clean(transformers.T5EncoderModel, out / "hf")
    seqs = [r.sequence[:CROP - 5 * i] for i, r in enumerate(datasets.read_netsurfp_csv(inputs / "ss.csv")[:3])]
    ids = tuner.scheme.encode(seqs, len(seqs), CROP + 1)  # [3, tokens]
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0)).last_hidden_state
    encode = jax.jit(lambda params: tuner.encoder.apply({"params": params}, ids, enable_dropout=False))
    ours = np.asarray(encode(finetune.merged_encoder_params(tuner)))  # [3, tokens, width]
    base = np.asarray(encode(model_io.encoder_of(model_io.load_model(inputs / "lm"))[2]))
    for row, seq in enumerate(seqs):
        np.testing.assert_allclose(hidden[row, :len(seq) + 1].numpy(), ours[row, :len(seq) + 1], atol=1e-4)
        assert np.abs(ours[row, :len(seq)] - base[row, :len(seq)]).max() > 1e-3  # fine-tuning changed the encoder
    assert info["features"] == f"model:{out / 'hf'}" and info["task"] == "secondary-structure"


def test_predict_with_the_head_and_hf_folder_gives_the_finetuned_models_predictions(lora_run, best, inputs,
                                                                                     tmp_path):
    out, tuner = lora_run[0], best[0]
    records = datasets.read_netsurfp_csv(inputs / "ss.csv")[:4]
    fasta = write_fasta(tmp_path / "q.fasta", {f"q{i}": r.sequence[:CROP - 7 * i] for i, r in enumerate(records)})
    rc, _, err = _run(["predict", "--fasta", str(fasta), "--head", str(out / "head"), "--model", str(out / "hf"),
                       "--out", str(tmp_path / "p")])
    assert rc == 0, err
    predicted = json.loads((tmp_path / "p.json").read_text())
    own = tuner.predict([p["sequence"] for p in predicted.values()])
    for p, o in zip(predicted.values(), own):
        np.testing.assert_allclose(p["dssp3_probabilities"], o["dssp3"], atol=2e-4)
        np.testing.assert_allclose(p["dssp8_probabilities"], o["dssp8"], atol=2e-4)
    rc, _, err = _run(["predict", "--fasta", str(fasta), "--head", str(out / "head"), "--model", str(inputs / "lm"),
                       "--out", str(tmp_path / "base")])
    assert rc == 2 and "model_fingerprint" in err and str(out / "head") in err  # the base model is refused
    assert not (tmp_path / "base.json").exists()


def test_full_finetuning_per_protein_from_a_huggingface_folder(tmp_path, shared_data):
    config = configs.get_config("prot_bert_tiny")
    export.export_model(model_io.LoadedModel(config, random_params(config), "BertForMaskedLM", "random"),
                        tmp_path / "hf_in", encoder_only=True)
    records = [r for r in datasets.read_deeploc_fasta(shared_data / "deeploc" / "deeploc_our_val_set.fasta")][:16]
    data = tmp_path / "loc.fasta"
    data.write_text("".join(f">{r.id} {datasets.LOCATIONS[r.location]}-{'SM'[r.membrane] if r.membrane >= 0 else 'U'}"
                            f"\n{r.sequence}\n" for r in records))
    out = tmp_path / "run"
    rc, text, err = _run(["finetune", "--model", str(tmp_path / "hf_in"), "--task", "localization", "--data",
                          str(data), "--mode", "full", "--out", str(out), "--epochs", "1", "--max-length", "32",
                          "--val-fraction", "0.25", "--lr", "1e-3", "--no-progress"])
    assert rc == 0, err
    assert "(full," in text and "loss(location+membrane) train=" in text and "val_Q10=" in text
    info = json.loads((out / "head" / "head.json").read_text())
    assert info["task"] == "localization" and info["head_name"] == "fnn"
    assert info["provenance"]["architecture"] == "BertModel" and info["provenance"]["pooling"] == "per_protein"
    load_clean(transformers.BertModel, out / "hf", add_pooling_layer=False)
    before, after = _hf_weights(tmp_path / "hf_in"), _hf_weights(out / "hf")
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert any("intermediate" in k for k in changed) and any("embeddings" in k for k in changed)  # not LoRA's subset
    assert "Q10" in (out / "report.md").read_text()


def test_refusals_are_one_line_and_leave_outputs_alone(lora_run, inputs, tmp_path, shared_data):
    out = lora_run[0]
    stamp = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*") if p.is_file()}
    rc, _, err = _run(_lora_argv(inputs, out, 3, "--lr", "1e-3"))
    assert rc == 2 and "--lr 0.003 there vs 0.001 now" in err and len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*") if p.is_file()} == stamp

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    rc, _, err = _run(_lora_argv(inputs, taken, 1))
    assert rc == 2 and "holds no fine-tuning run" in err and "--overwrite" in err
    assert sorted(p.name for p in taken.iterdir()) == ["mine.txt"]

    deeploc = shared_data / "deeploc" / "setHARD.fasta"
    cases = [(["--data", str(deeploc)], [str(deeploc), "NetSurfP CSV"]),
             (["--model", str(tmp_path / "missing")], [str(tmp_path / "missing"), "no such model directory"]),
             (["--mesh", "data=16"], ["needs 16 devices"]),
             (["--mesh", "dat=2"], ["AXIS=SIZE"]),
             (["--head", "fnn"], ["takes cnn"])]
    for extra, needles in cases:
        rc, _, err = _run(_lora_argv(inputs, tmp_path / "new", 1, *extra))
        assert rc == 2 and len(err.strip().splitlines()) == 1, (extra, err)
        assert all(n in err for n in needles), (extra, err)
        assert not (tmp_path / "new").exists()



def test_ctrl_c_says_what_is_saved_and_exits_130(inputs, tmp_path, monkeypatch):
    real = finetune_cli._epoch

    def interrupted_in_epoch_2(run, epoch, *rest):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(run, epoch, *rest)

    monkeypatch.setattr(finetune_cli, "_epoch", interrupted_in_epoch_2)
    rc, _, err = _run(_lora_argv(inputs, tmp_path / "run", 2))
    assert rc == 130 and "Traceback" not in err
    assert f"interrupted: epochs up to 1 are saved in {tmp_path / 'run' / 'checkpoints'}" in err
    assert "run the same command to resume" in err
