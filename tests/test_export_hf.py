"""export-hf: every family's checkpoint loads in transformers (torch) and embeds as ours; tokenizers; refusals."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

import torch  # noqa: E402  (a test requirement: a broken install fails, never skips)
import transformers  # noqa: E402

from hf_loading import load_clean  # noqa: E402

from model_dirs import random_params, write_fasta, write_model_dir  # noqa: E402
from proteins import read_proteins  # noqa: E402
from prottrans_jax import alphabet, checkpoints, cli, embed, model_io  # noqa: E402
from prottrans_jax.models import configs  # noqa: E402

TOL = 1e-4
FAMILIES = ("t5", "bert", "albert", "electra")
HF_ENCODER = {"t5": "T5EncoderModel", "bert": "BertModel", "albert": "AlbertModel", "electra": "ElectraModel"}
HF_FULL = {"t5": "T5ForConditionalGeneration", "bert": "BertForMaskedLM", "albert": "AlbertForMaskedLM",
           "electra": "ElectraForPreTraining"}
CROPS = (100, 61, 33, 12, 5)  # residues; BERT tiny has 128 positions


@pytest.fixture(scope="module")
def sequences(demo_corpus):
    return {f"prot{i}": s[:n] for i, (s, n) in enumerate(zip(read_proteins(demo_corpus, len(CROPS)), CROPS))}


def hf_hidden_states(model_dir, family, seqs, dtype=torch.float32):
    """The ProtTrans way: the HF tokenizer on space-separated residues, the HF encoder, all hidden states."""
    tok_cls = transformers.T5Tokenizer if family == "t5" else transformers.BertTokenizer
    tokenizer = tok_cls.from_pretrained(model_dir)
    model, info = getattr(transformers, HF_ENCODER[family]).from_pretrained(model_dir, dtype=dtype,
                                                                          output_loading_info=True)
    # A full folder has extra head keys; a *ForMaskedLM has no pooler, which hidden states never use.
    assert not [k for k in info["missing_keys"] if not k.startswith("pooler.")] and not info["mismatched_keys"], info
    model.eval()
    batch = tokenizer([alphabet.space_separated(s) for s in seqs], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return [h.float().numpy() for h in out.hidden_states], batch["input_ids"].numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_export_loads_in_transformers_and_embeds_as_we_do(family, tmp_path, sequences, capsys):
    run, out = tmp_path / "run", tmp_path / "hf"
    write_model_dir(run, family)
    assert cli.main(["export-hf", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert "from_pretrained" in capsys.readouterr().out
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["architectures"] == [HF_FULL[family]]
    load_clean(getattr(transformers, HF_FULL[family]), out)  # the full model loads too, every tensor used
    if family == "electra":
        _electra_logits_match_transformers(run, out, list(sequences.values()))

    seqs = list(sequences.values())
    hidden, ids = hf_hidden_states(out, family, seqs)
    fasta_path = write_fasta(tmp_path / "in.fa", sequences)
    summary = embed.embed_fasta(run, fasta_path, tmp_path / "e.h5", per_residue=True, per_protein=True,
                                progress=False)
    start = 0 if family == "t5" else 1  # BERT-style models drop [CLS]
    with h5py.File(summary.outputs["per_residue"]) as res, h5py.File(summary.outputs["per_protein"]) as prot:
        for row, (name, seq) in enumerate(sequences.items()):
            ref = hidden[-1][row, start:start + len(seq)]
            np.testing.assert_allclose(res[name][()], ref, atol=TOL, rtol=0)
            np.testing.assert_allclose(prot[name][()], ref.mean(axis=0), atol=TOL, rtol=0)
    # An intermediate layer is HF's hidden_states[1].
    layer1 = embed.embed_fasta(run, fasta_path, tmp_path / "l1.h5", per_residue=True, per_protein=False, layer=1,
                               progress=False)
    with h5py.File(layer1.outputs["per_residue"]) as res:
        assert res.attrs["layer"] == 1
        name, seq = next(iter(sequences.items()))
        np.testing.assert_allclose(res[name][()], hidden[1][0, start:start + len(seq)], atol=TOL, rtol=0)


@pytest.mark.parametrize("family", ("t5", "bert"))
def test_exported_tokenizers_match_the_released_ones(family, tmp_path, shared_data, sequences):
    run, out = tmp_path / "run", tmp_path / "hf"
    write_model_dir(run, family)
    assert cli.main(["export-hf", "--checkpoint", str(run), "--out", str(out), "--encoder-only"]) == 0
    if family == "t5":
        ours = transformers.T5Tokenizer.from_pretrained(out)
        released = transformers.T5Tokenizer.from_pretrained(shared_data / "tokenizers" / "prot_t5_xl_uniref50")
    else:
        ours = transformers.BertTokenizer.from_pretrained(out)
        released = transformers.BertTokenizer(str(shared_data / "tokenizers" / "prot_bert" / "vocab.txt"),
                                              do_lower_case=False)
    texts = [alphabet.space_separated(s) for s in sequences.values()] + ["M K X <extra_id_0> W C"]
    assert len(ours) == len(released)
    for text in texts:
        assert ours(text).input_ids == released(text).input_ids


def test_half_precision_encoder_only_export(tmp_path, sequences):
    """As the released prot_t5_xl_half_uniref50-enc: T5EncoderModel, float16 weights, tokenizer beside."""
    from safetensors import safe_open

    run, half = tmp_path / "run", tmp_path / "half"
    write_model_dir(run, "t5")
    assert cli.main(["export-hf", "--checkpoint", str(run), "--out", str(half), "--encoder-only",
                     "--dtype", "float16"]) == 0
    hf_config = json.loads((half / "config.json").read_text())
    assert hf_config["architectures"] == ["T5EncoderModel"] and hf_config["dtype"] == "float16"
    with safe_open(str(half / "model.safetensors"), framework="np") as f:
        names = list(f.keys())
        assert {str(f.get_tensor(k).dtype) for k in names} == {"float16"}
    assert not any(k.startswith("decoder.") for k in names)
    seqs = list(sequences.values())
    half_hidden, _ = hf_hidden_states(half, "t5", seqs)
    # Our embedder reads the half folder too (upcast to float32) and agrees with torch on the same weights.
    summary = embed.embed_fasta(half, write_fasta(tmp_path / "in.fa", sequences), tmp_path / "e.h5",
                                per_residue=True, per_protein=False, progress=False)
    with h5py.File(summary.outputs["per_residue"]) as res:
        for row, (name, seq) in enumerate(sequences.items()):
            np.testing.assert_allclose(res[name][()], half_hidden[-1][row, :len(seq)], atol=TOL, rtol=0)
    # Rounding to float16 moves the embeddings only slightly from the float32 model's.
    full, _ = hf_hidden_states(_export(run, tmp_path / "full"), "t5", seqs)
    assert np.max(np.abs(full[-1] - half_hidden[-1])) < 0.05
    assert np.max(np.abs(full[-1] - half_hidden[-1])) > 0


def _export(run, out, *extra):
    assert cli.main(["export-hf", "--checkpoint", str(run), "--out", str(out), *extra]) == 0
    return out


def test_t5x_checkpoint_exports(tmp_path):
    """t5x's Orbax layout: checkpoint_<step>/state with the parameters under 'target', no meta of ours."""
    config = configs.get_config("prot_t5_tiny")
    params = random_params(config, seed=3)
    model_dir = tmp_path / "t5x_run"
    with checkpoints.TrainCheckpointer(str(model_dir), async_save=False, save_every=1) as ckpt:
        ckpt.save(3, {"target": params, "state": {"step": 3}}, {}, force=True)
    shutil.rmtree(model_dir / "checkpoint_3" / "meta")
    with pytest.raises(ValueError, match="--config NAME"):
        model_io.load_model(model_dir)
    loaded = model_io.load_model(model_dir, config_name="prot_t5_tiny")
    assert loaded.step == 3 and loaded.architecture == "T5ForConditionalGeneration"
    (model_dir / "config.gin").write_text("MODEL_CONFIG_NAME = 'prot_t5_tiny'\n")
    out = _export(model_dir, tmp_path / "hf")
    hf = load_clean(transformers.T5ForConditionalGeneration, out)
    np.testing.assert_array_equal(hf.shared.weight.detach().numpy(), params["token_embedder"]["embedding"])
    np.testing.assert_array_equal(hf.lm_head.weight.detach().numpy(), params["decoder"]["logits_dense"]["kernel"].T)


def test_export_refuses_a_nonempty_folder_and_keeps_it(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "hf"
    write_model_dir(run, "bert")
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(["export-hf", "--checkpoint", str(run), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    assert cli.main(["export-hf", "--checkpoint", str(run), "--out", str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "notes.txt").exists()


@pytest.mark.parametrize("args, needle", [
    (["--family", "t5"], "not a t5 model"),
    (["--config", "prot_t5_tiny"], "is not 'prot_t5_tiny'"),
])
def test_a_bert_checkpoint_asked_for_as_t5_is_refused(tmp_path, capsys, args, needle):
    run = tmp_path / "run"
    write_model_dir(run, "bert")
    assert cli.main(["export-hf", "--checkpoint", str(run), "--out", str(tmp_path / "hf"), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(run) in err and "Traceback" not in err
    assert not (tmp_path / "hf").exists()


def test_wrong_model_directories_are_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for path, needle in ((tmp_path / "missing", "no such model directory"),
                         (tmp_path / "empty", "no finished checkpoint_<step>/")):
        assert cli.main(["export-hf", "--checkpoint", str(path), "--out", str(tmp_path / "hf")]) == 2
        err = capsys.readouterr().err
        assert needle in err and str(path) in err
    hf_enc = _export_encoder_only(tmp_path)
    assert cli.main(["export-hf", "--checkpoint", str(hf_enc), "--out", str(tmp_path / "again")]) == 2
    assert "--encoder-only" in capsys.readouterr().err


def _export_encoder_only(tmp_path):
    write_model_dir(tmp_path / "run", "t5")
    return _export(tmp_path / "run", tmp_path / "enc", "--encoder-only")


def test_relative_paths_work(tmp_path, monkeypatch, sequences):
    monkeypatch.chdir(tmp_path)
    write_model_dir(tmp_path / "run", "t5")
    assert cli.main(["export-hf", "--checkpoint", "run", "--out", "hf"]) == 0
    write_fasta(tmp_path / "in.fa", sequences)
    assert cli.main(["embed", "--model", "run", "--fasta", "in.fa", "--out", "e.h5", "--no-progress"]) == 0
    assert cli.main(["import-hf", "--hf", "hf", "--out", "imported"]) == 0
    assert model_io.load_model("imported").architecture == "T5ForConditionalGeneration"


def _electra_logits_match_transformers(run, out, seqs):
    """Both halves of our ELECTRA pair give transformers' logits: generator MLM and discriminator."""
    model = model_io.load_model(run)
    module = configs.build_model(model.config)
    tokenizer = transformers.BertTokenizer.from_pretrained(out)
    batch = tokenizer([alphabet.space_separated(s) for s in seqs], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
    gen, disc = module.apply({"params": model.params}, ids, attention_mask=mask)  # [b, l, vocab], [b, l]
    hf_gen = load_clean(transformers.ElectraForMaskedLM, out / "generator")
    hf_disc = load_clean(transformers.ElectraForPreTraining, out)
    with torch.no_grad():
        want_gen = hf_gen(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()
        want_disc = hf_disc(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()
    real = mask.astype(bool)
    assert np.abs(want_gen).max() > 0.1  # random weights give logits far from zero: a real comparison
    np.testing.assert_allclose(np.asarray(gen)[real], want_gen[real], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(disc)[real], want_disc[real], atol=TOL, rtol=0)
