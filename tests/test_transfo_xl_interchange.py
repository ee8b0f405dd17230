"""ProtTXL <-> transformers 4.35's TransfoXLLMHeadModel through the CLI, checked in a throwaway 4.35 environment.

transformers 5 has no TransfoXL. tests/transformers435.py builds (once, cached) an environment with
transformers 4.35.2 over our torch; tests/txl435_reference.py runs there. Real proteins, two segments
with memory, with clamp_len and same_length; 4.35's own checkpoints imported and written back.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from hf_refusals import cli_refusal, folder_variant
from model_dirs import random_params, write_model_dir
from proteins import read_proteins
from transformers435 import run_reference, transformers435_python  # noqa: F401  (a fixture)

from prottrans_jax import alphabet, cli, model_io
from prottrans_jax.hf import transfo_xl_map as tm
from prottrans_jax.models import configs
from prottrans_jax.models.transfo_xl import TransfoXLLMHeadModel

TOL = 1e-4
FIRST, SECOND = 12, 10  # tokens per segment: [CLS] + 20 residues + [SEP] split in two
# Run-only settings applied on both sides (prot_txl_tiny: mem_len 16, clamp_len -1, same_length False).
CASES = {"memory": {}, "clamp_len": {"clamp_len": 5},
         "same_length": {"same_length": True, "mem_len": 8}}  # memory shorter than a segment: truncated
TINY = dict(vocab_size=30, d_model=32, n_layer=2, n_head=4, d_head=8, d_inner=64, dropout=0.0, mem_len=16,
            clamp_len=-1, same_length=False)
NATIVE = {"untie_r_safetensors": dict(seed=1, untie_r=True, safe_serialization=True),
          "shared_r_pytorch_bin": dict(seed=2, untie_r=False, safe_serialization=False)}


@pytest.fixture(scope="module")
def proteins(demo_corpus):
    seqs = [alphabet.normalize_sequence(s)[: FIRST + SECOND - 2] for s in read_proteins(demo_corpus, 3)]
    assert min(map(len, seqs)) == FIRST + SECOND - 2
    return seqs


@pytest.fixture(scope="module")
def reference(tmp_path_factory, transformers435_python, proteins):  # noqa: F811
    """Our tiny ProtTXL exported with ``export-hf``, 4.35's outputs for it and two 4.35-made checkpoints."""
    work = tmp_path_factory.mktemp("txl435")
    config, params = write_model_dir(work / "run", "transfo_xl")
    assert cli.main(["export-hf", "--checkpoint", str(work / "run"), "--out", str(work / "hf")]) == 0
    residue = alphabet.prot_bert_residue_ids()
    ids = np.asarray([[alphabet.PROT_BERT_CLS_ID] + [residue[c] for c in s] + [alphabet.PROT_BERT_SEP_ID]
                      for s in proteins], np.int32)  # [3, FIRST + SECOND]
    np.savez(work / "inputs.npz", first=ids[:, :FIRST], second=ids[:, FIRST:])
    request = {"exported": str(work / "hf"), "cases": CASES, "tiny": TINY, "default_keys": sorted(tm.HF_DEFAULTS),
               "texts": [alphabet.space_separated(s) for s in proteins],
               "native": {k: {**v, "dir": str(work / k)} for k, v in NATIVE.items()}}
    (work / "request.json").write_text(json.dumps(request))
    run_reference(transformers435_python, pathlib.Path(__file__).with_name("txl435_reference.py"), str(work))
    report = json.loads((work / "reference.json").read_text())
    return dict(work=work, config=config, params=params, ids=ids, report=report,
                arrays=dict(np.load(work / "reference.npz")))


def ours(config, params, ids, mems=None):
    """Log-probs, hidden states ``[layers + 1, batch, length, embed]`` and memory of one segment."""
    out = TransfoXLLMHeadModel(config).apply({"params": params}, ids, mems=mems, output_hidden_states=True)
    return np.asarray(jax.nn.log_softmax(out.logits)), np.stack(out.hidden_states), out.mems


def assert_two_segments_match(config, params, ids, ref, prefix):
    """Both segments (the second reading the first's memory): log-probs, every hidden state, the memory."""
    mems = None
    for seg, segment in (("1", ids[:, :FIRST]), ("2", ids[:, FIRST:])):
        scores, hidden, mems = ours(config, params, segment, mems)
        for name, a in (("scores", scores), ("hidden", hidden), ("mems", np.asarray(mems))):
            b = ref[f"{prefix}.{seg}.{name}"]
            assert a.shape == b.shape, (prefix, seg, name)
            assert np.abs(a - b).max() < TOL, (prefix, seg, name, np.abs(a - b).max())
    assert mems.shape[2] == min(config.mem_len, FIRST + SECOND)


def test_export_loads_in_transformers_435_with_its_tokenizer(reference, proteins):
    """4.35 loads every tensor of the folder export-hf wrote; its tokenizer gives our ids ([CLS] residues [SEP])."""
    report = reference["report"]
    assert report["versions"]["transformers"] == "4.35.2"
    for case, info in report["loading"].items():
        assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}, case
    assert report["tokenizer"].startswith("BertTokenizer")
    assert report["token_ids"] == reference["ids"].tolist()
    hf_config = json.loads((reference["work"] / "hf" / "config.json").read_text())
    assert (hf_config["model_type"], hf_config["cutoffs"], hf_config["div_val"]) == ("transfo-xl", [], 1)
    assert hf_config["architectures"] == ["TransfoXLLMHeadModel"] and hf_config["eos_token_id"] == 3


@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_prottxl_matches_transformers_435(reference, case):
    """Log-probs, every hidden state and the memory over two segments of real proteins, within 1e-4."""
    config = reference["config"].replace(**CASES[case])
    assert_two_segments_match(config, reference["params"], reference["ids"], reference["arrays"], f"exported.{case}")


def test_435_without_mems_attends_to_a_zero_memory(reference):
    """4.35 starts (mems=None) from mem_len zero vectors, not from an empty memory as ProtTXL's training:
    the README tells PyTorch users to pass empty mems; here both behaviours are pinned."""
    config, params, ids, ref = (reference[k] for k in ("config", "params", "ids", "arrays"))
    first = ids[:, :FIRST]
    zeros = np.zeros((3, config.n_layer, config.mem_len, config.d_model), np.float32)
    hf_default = ref["exported.memory.1.scores_mems_none"]
    assert np.abs(ours(config, params, first, zeros)[0] - hf_default).max() < TOL
    assert np.abs(ours(config, params, first)[0] - hf_default).max() > 1e-3  # an empty memory differs


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_435_checkpoints_import_match_and_export_back(reference, name, tmp_path):
    """A 4.35 save_pretrained folder -> import-hf -> our outputs equal 4.35's -> export-hf -> the same tensors."""
    import torch
    from safetensors.numpy import load_file

    folder = reference["work"] / name
    assert cli.main(["import-hf", "--hf", str(folder), "--out", str(tmp_path / "run")]) == 0
    model = model_io.load_model(tmp_path / "run")
    assert model.architecture == "TransfoXLLMHeadModel" and model.config.untie_r == NATIVE[name]["untie_r"]
    assert_two_segments_match(model.config, model.params, reference["ids"], reference["arrays"], f"native.{name}")
    assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    ours_tensors = load_file(tmp_path / "hf" / "model.safetensors")
    if NATIVE[name]["safe_serialization"]:
        original = load_file(folder / "model.safetensors")
    else:
        original = {k: v.numpy() for k, v in torch.load(folder / "pytorch_model.bin", weights_only=True).items()}
    # The .bin also lists the tied head and each layer's view of the shared biases; ours writes each once.
    assert set(ours_tensors) <= set(original) and len(ours_tensors) >= len(original) - 1 - 2 * TINY["n_layer"]
    for key, value in ours_tensors.items():
        if key.endswith("inv_freq"):  # a derived buffer: torch's pow and numpy's may differ in the last bit
            np.testing.assert_allclose(value, original[key], rtol=1e-6, atol=0)
        else:
            np.testing.assert_array_equal(value, original[key], err_msg=key)


def test_hf_defaults_match_transformers_435(reference):
    """Keys absent from a config.json take 4.35's TransfoXLConfig defaults: our table must agree."""
    assert reference["report"]["defaults"] == tm.HF_DEFAULTS


def _refused(capsys, tmp_path, folder, *flags):
    out = tmp_path / "refused"
    return cli_refusal(capsys, out, ["import-hf", "--hf", str(folder), "--out", str(out), *flags])


def test_folders_that_are_not_our_layout_are_refused(tmp_path, capsys):
    """Adaptive softmax, projections, untied head, missing tensor, another family: one line each, nothing written."""
    config = configs.get_config("prot_txl_tiny")
    good = tm.export_hf("TransfoXLLMHeadModel", config, random_params(config, seed=4), tmp_path / "good")

    def variant(name, config_changes=None, tensors=None):
        return folder_variant(good, tmp_path / name, config_changes, tensors)

    err = _refused(capsys, tmp_path, variant("adaptive", {"cutoffs": [10, 20], "div_val": 2}))
    assert "config.json: cutoffs [10, 20] means an adaptive softmax with clusters" in err
    err = _refused(capsys, tmp_path, variant("projected", {"d_embed": 16}))
    assert "d_embed 16 != d_model 32" in err
    untied = variant("untied", tensors=lambda t: {**t, "crit.out_layers.0.weight": np.ones((30, 32), np.float32)})
    err = _refused(capsys, tmp_path, untied)
    assert "model.safetensors: tensor 'crit.out_layers.0.weight' differs from " \
           "'transformer.word_emb.emb_layers.0.weight'; untied output layers are not supported" in err
    missing = variant("missing", tensors=lambda t: {k: v for k, v in t.items() if "layers.1.pos_ff.CoreNet.3" not in k})
    err = _refused(capsys, tmp_path, missing)
    assert "model.safetensors: tensor 'transformer.layers.1.pos_ff.CoreNet.3.weight' is missing" in err
    err = _refused(capsys, tmp_path, variant("deeper", {"n_layer": 3}))
    assert "tensor 'transformer.layers.2.dec_attn.qkv_net.weight' is missing" in err
    err = _refused(capsys, tmp_path, good, "--family", "xlnet")
    assert "holds a TransfoXLLMHeadModel (transfo_xl family) model, not a xlnet model" in err


def test_half_precision_export_keeps_the_position_frequencies_float32(tmp_path):
    """Weights as bfloat16, the derived inv_freq buffer float32 (rounded, far positions would drift); reads back."""
    from safetensors import safe_open

    config = configs.get_config("prot_txl_tiny")
    params = random_params(config, seed=5)
    folder = tm.export_hf("TransfoXLLMHeadModel", config, params, tmp_path / "hf", dtype="bfloat16")
    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
        np.testing.assert_array_equal(f.get_tensor("transformer.pos_emb.inv_freq"), tm.inv_freq(config.d_model))
    assert dtypes.pop("transformer.pos_emb.inv_freq") == "F32" and set(dtypes.values()) == {"BF16"}
    _, _, back = tm.import_hf(folder)
    emb = params["word_embeddings"]["embedding"]
    assert 0 < np.abs(back["word_embeddings"]["embedding"] - emb).max() < 1e-2 * np.abs(emb).max()
