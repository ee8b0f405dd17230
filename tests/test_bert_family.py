"""BERT/ALBERT/ELECTRA parity with HuggingFace transformers (torch): import, export, tokenizer, refusals."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch  # noqa: E402  (a test requirement: a broken install fails, never skips)
import transformers  # noqa: E402

from hf_loading import load_clean  # noqa: E402

from prottrans_jax import alphabet  # noqa: E402
from prottrans_jax.hf import encoder_maps as em  # noqa: E402
from prottrans_jax.hf.common import CheckpointError, flatten_params  # noqa: E402
from prottrans_jax.models import layers  # noqa: E402
from proteins import read_proteins

TOL = 1e-4
CROP_LENGTHS = (47, 30, 12, 5)  # residues per sequence; +[CLS]/[SEP], padded to the longest
TINY = dict(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# family -> (HF config class, HF config fields beyond TINY)
FAMILIES = {
    "BertForMaskedLM": ("BertConfig", {}),
    "BertModel": ("BertConfig", {"hidden_act": "relu"}),
    "AlbertForMaskedLM": ("AlbertConfig", {"embedding_size": 16, "num_hidden_layers": 3, "hidden_act": "gelu_new"}),
    "ElectraForPreTraining": ("ElectraConfig", {"embedding_size": 24}),
    "ElectraForMaskedLM": ("ElectraConfig", {"embedding_size": 32, "hidden_size": 16, "num_attention_heads": 2}),
}


@pytest.fixture(scope="module")
def protein_batch(demo_corpus):
    """Real sequences cropped to several lengths: ``(input_ids, attention_mask)`` int32, [CLS] ... [SEP] + pads."""
    from prottrans_jax.vocab import ProtBertVocabulary

    vocab = ProtBertVocabulary()
    seqs = read_proteins(demo_corpus, len(CROP_LENGTHS))
    rows = [[vocab.cls_id] + list(vocab.encode(s[:n])) + [vocab.sep_id] for s, n in zip(seqs, CROP_LENGTHS)]
    ids = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row
    return ids, (ids != 0).astype(np.int32)


def make_hf_model(family, seed=0):
    """A random tiny HF model (fp32, eval) with every parameter perturbed away from its init."""
    cfg_name, extra = FAMILIES[family]
    torch.manual_seed(seed)
    model = getattr(transformers, family)(getattr(transformers, cfg_name)(**{**TINY, **extra})).eval()
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p))  # biases and norms leave 0/1, so a misplaced one shows
    return model


def hf_outputs(model, ids, mask):
    """(logits or last hidden state, hidden_states) as numpy."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                    output_hidden_states=True)
    main = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return main.numpy(), [h.numpy() for h in out.hidden_states]


def our_outputs(family, config, params, ids, mask):
    module = em.ARCHITECTURES[family].module(config)
    apply = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m, output_hidden_states=True))
    main, hidden = apply(params, jnp.asarray(ids), jnp.asarray(mask))
    return np.asarray(main), [np.asarray(h) for h in hidden]


def assert_close(ours, ref):
    main, hidden = ours
    ref_main, ref_hidden = ref
    assert main.shape == ref_main.shape
    assert np.abs(main - ref_main).max() < TOL
    assert len(hidden) == len(ref_hidden)
    for i, (a, b) in enumerate(zip(hidden, ref_hidden)):
        assert np.abs(a - b).max() < TOL, f"hidden state {i}"


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """family -> (HF model, folder it was saved to with save_pretrained)."""
    out = {}
    for family in FAMILIES:
        model = make_hf_model(family)
        path = tmp_path_factory.mktemp(family)
        model.save_pretrained(path)
        out[family] = (model, path)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_import_export_parity(family, saved_models, protein_batch, tmp_path):
    ids, mask = protein_batch
    assert mask.min() == 0 and len(set(mask.sum(1))) == len(CROP_LENGTHS)  # real padding, several lengths
    model, path = saved_models[family]
    ref = hf_outputs(model, ids, mask)
    got_family, config, params = em.import_hf(path)
    assert got_family == family
    assert config.num_layers == model.config.num_hidden_layers
    ours = our_outputs(family, config, params, ids, mask)
    assert_close(ours, ref)

    out = em.export_hf(family, config, params, tmp_path / "export")
    loaded, info = getattr(transformers, family).from_pretrained(out, output_loading_info=True)
    loaded.eval()
    missing = [k for k in info["missing_keys"] if "pooler" not in k]  # our BertModel has no pooler
    assert not missing and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_close(ours, hf_outputs(loaded, ids, mask))


def test_import_scanned_equals_unscanned(saved_models, protein_batch):
    ids, mask = protein_batch
    _, config, params = em.import_hf(saved_models["BertForMaskedLM"][1])
    _, scfg, sparams = em.import_hf(saved_models["BertForMaskedLM"][1], scan_layers=True, remat_policy="full")
    assert sparams["encoder"]["layers"]["attention"]["query"]["kernel"].shape == (2, 32, 32)
    assert_close(our_outputs("BertForMaskedLM", scfg, sparams, ids, mask),
                 our_outputs("BertForMaskedLM", config, params, ids, mask))
    np.testing.assert_array_equal(layers.unstack_layer_params(sparams)["encoder"]["layers_1"]["mlp"]["wo"]["kernel"],
                                  params["encoder"]["layers_1"]["mlp"]["wo"]["kernel"])


def test_export_bf16_and_encoder_only(saved_models, protein_batch, tmp_path):
    """bf16 weights load in torch; a BertModel is read out of an MLM checkpoint (head ignored)."""
    ids, mask = protein_batch
    model, path = saved_models["BertForMaskedLM"]
    family, config, params = em.import_hf(path, family="BertModel")
    assert family == "BertModel" and "predictions" not in params
    em.export_hf("BertForMaskedLM", *em.import_hf(path)[1:], tmp_path / "bf16", dtype="bfloat16")
    loaded = load_clean(transformers.BertForMaskedLM, tmp_path / "bf16")
    assert loaded.bert.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    with torch.no_grad():
        hf_last = model.bert(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    ours = our_outputs("BertModel", config, params, ids, mask)[0]
    assert np.abs(ours - hf_last.last_hidden_state.numpy()).max() < TOL


def test_tokenizer_files(tmp_path, shared_data):
    from prottrans_jax.vocab import ProtBertVocabulary

    em.write_prot_bert_tokenizer(tmp_path)
    assert (tmp_path / "vocab.txt").read_text() == (shared_data / "tokenizers/prot_bert/vocab.txt").read_text()
    tok = transformers.BertTokenizer.from_pretrained(tmp_path)
    seq = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQUZOB"
    vocab = ProtBertVocabulary()
    # ProtTrans maps U Z O B to X before tokenizing; our vocabulary does it inside encode().
    text = alphabet.space_separated(alphabet.normalize_sequence(seq))
    assert tok(text)["input_ids"] == [2] + list(vocab.encode(seq)) + [3]
    assert tok("m k")["input_ids"] == [2, 1, 1, 3]  # case kept: lowercase letters are unknown
    assert transformers.AutoTokenizer.from_pretrained(tmp_path)("M K")["input_ids"] == [2, 21, 12, 3]


def test_hf_defaults_match_transformers():
    """Absent config.json keys take HF's class defaults: our table must agree with transformers."""
    for model_type, defaults in em.HF_DEFAULTS.items():
        hf = transformers.AutoConfig.for_model(model_type)
        for key, value in defaults.items():
            assert getattr(hf, key) == value, (model_type, key)


# ---------------------------------------------------------------------------------------
# Refusals: one CheckpointError (a ValueError) naming file, tensor, expected and found.
# ---------------------------------------------------------------------------------------
def test_wrong_family_refused(tmp_path, saved_models):
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_heads=4, num_layers=1, num_decoder_layers=1))
    t5.save_pretrained(tmp_path / "t5")
    for family in ("BertForMaskedLM", "bert", None):
        with pytest.raises(CheckpointError, match=r"config\.json: model_type 't5'") as err:
            em.import_hf(tmp_path / "t5", family=family)
        assert isinstance(err.value, ValueError) and str(tmp_path / "t5") in str(err.value)
    with pytest.raises(CheckpointError, match="holds a ElectraForMaskedLM, not a ElectraForPreTraining"):
        em.import_hf(saved_models["ElectraForMaskedLM"][1], family="ElectraForPreTraining")
    with pytest.raises(CheckpointError, match="model_type 'albert'.*expected model_type 'bert'"):
        em.import_hf(saved_models["AlbertForMaskedLM"][1], family="BertForMaskedLM")


def _rewrite(src, dst, change):
    """Copies a saved HF folder, applying ``change(tensors_dict)`` to its safetensors."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    change(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_wrong_shape_and_missing_refused(tmp_path, saved_models):
    src = saved_models["BertForMaskedLM"][1]
    name = "bert.encoder.layer.1.intermediate.dense.weight"
    bad = _rewrite(src, tmp_path / "shape", lambda t: t.__setitem__(name, t[name][:48]))
    with pytest.raises(CheckpointError) as err:
        em.import_hf(bad)
    msg = str(err.value)
    assert "model.safetensors" in msg and name in msg and "(48, 32)" in msg and "expected (64, 32)" in msg

    gone = _rewrite(src, tmp_path / "missing", lambda t: t.pop("cls.predictions.bias"))
    with pytest.raises(CheckpointError, match="'cls.predictions.bias' is missing"):
        em.import_hf(gone)

    # A config.json that does not describe the weights (hidden 48 vs 32 in the file).
    mismatch = shutil.copytree(src, tmp_path / "config")
    cfg = json.loads((mismatch / "config.json").read_text())
    (mismatch / "config.json").write_text(json.dumps({**cfg, "hidden_size": 48}))
    with pytest.raises(CheckpointError, match=r"has shape \(30, 32\), expected \(30, 48\)"):
        em.import_hf(mismatch)


def test_untied_decoder_and_extra_tensors_refused(tmp_path, saved_models):
    src = saved_models["BertForMaskedLM"][1]
    untied = _rewrite(src, tmp_path / "untied", lambda t: t.__setitem__(
        "cls.predictions.decoder.weight", np.ones((30, 32), np.float32)))
    with pytest.raises(CheckpointError, match="untied output layers are not supported"):
        em.import_hf(untied)
    extra = _rewrite(src, tmp_path / "extra", lambda t: t.__setitem__(
        "bert.encoder.layer.2.output.dense.weight", np.ones((32, 64), np.float32)))
    with pytest.raises(CheckpointError, match="do not belong to BertForMaskedLM"):
        em.import_hf(extra)


def test_export_refuses_bad_params(tmp_path, saved_models):
    family, config, params = em.import_hf(saved_models["AlbertForMaskedLM"][1])
    params["predictions"]["dense"]["kernel"] = np.zeros((32, 8), np.float32)
    with pytest.raises(CheckpointError, match=r"'predictions/dense/kernel' has shape \(32, 8\), expected \(32, 16\)"):
        em.export_hf(family, config, params, tmp_path / "x")
    with pytest.raises(CheckpointError, match="needs a BertConfig"):
        em.export_hf("BertForMaskedLM", config, params, tmp_path / "y")


def test_legacy_pytorch_bin_with_gamma_beta(tmp_path, saved_models):
    """Old checkpoints: pytorch_model.bin, LayerNorm.gamma/beta, a pooler and NSP head (ignored)."""
    model, path = saved_models["BertForMaskedLM"]
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in model.state_dict().items()}
    state["bert.pooler.dense.weight"] = torch.zeros(32, 32)
    state["cls.seq_relationship.bias"] = torch.zeros(2)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(state, legacy / "pytorch_model.bin")
    cfg = json.loads((path / "config.json").read_text())
    (legacy / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertForPreTraining"]}))
    family, _, params = em.import_hf(legacy)
    _, _, reference = em.import_hf(path)
    assert family == "BertForMaskedLM"
    flat, ref = flatten_params(params), flatten_params(reference)
    assert flat.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(flat[k], ref[k])
