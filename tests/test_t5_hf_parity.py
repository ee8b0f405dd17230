"""Parity of our T5 with HuggingFace transformers (torch): import, export, the tie trap, refusals."""

from __future__ import annotations

import functools
import json
import shutil

import jax
import numpy as np
import pytest

import torch  # noqa: E402  (a test requirement: a broken install fails, never skips)
import transformers  # noqa: E402

from hf_loading import load_clean  # noqa: E402

from prottrans_jax import alphabet  # noqa: E402
from prottrans_jax.hf.common import CheckpointError  # noqa: E402
from prottrans_jax.hf.t5_map import export_t5, import_t5, t5_config_from_hf  # noqa: E402
from prottrans_jax.models import layers  # noqa: E402
from prottrans_jax.models.configs import get_config  # noqa: E402
from prottrans_jax.models.t5 import T5EncoderDecoder, T5EncoderModel  # noqa: E402
from proteins import read_proteins

TOL = 1e-4
CROP_LENGTHS = (6, 19, 33, 47)  # several lengths, padded to the longest (+ </s>)
TINY = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=2, num_decoder_layers=3,
            dropout_rate=0.0, relative_attention_max_distance=128, relative_attention_num_buckets=32)
# name -> (extra HF config fields, untie lm_head). "v1_0" copies the released ProtT5 config's shape of
# things: no tie_word_embeddings key (transformers' default applies) and its own lm_head.
VARIANTS = {
    "v1_0_relu_untied": (dict(feed_forward_proj="relu"), True),
    "v1_1_gated_untied": (dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False), True),
    "relu_tied": (dict(feed_forward_proj="relu", tie_word_embeddings=True), False),
}


def protein_batch(demo_corpus, lengths=CROP_LENGTHS):
    """Real sequences cropped to ``lengths``, ProtT5 ids + </s>, zero-padded: (enc, dec_in, dec_target)."""
    ids = alphabet.prot_t5_residue_ids()
    seqs = [alphabet.normalize_sequence(s) for s in read_proteins(demo_corpus, len(lengths))]
    rows = [[ids[a] for a in s[:n]] + [alphabet.PROT_T5_EOS_ID] for s, n in zip(seqs, lengths)]
    width = max(map(len, rows))
    enc = np.zeros((len(rows), width), np.int32)
    for r, row in enumerate(rows):
        enc[r, : len(row)] = row
    target = enc.copy()
    dec_in = np.zeros_like(target)
    dec_in[:, 1:] = target[:, :-1] * (target[:, 1:] > 0)  # right shift, decoder start 0
    return enc, dec_in, target


def make_hf_model(extra, untie, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.T5Config(**TINY, **extra)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)  # HF initializes norms to 1: randomize so a misplaced scale shows
        if untie:
            model.lm_head.weight = torch.nn.Parameter(torch.randn(cfg.vocab_size, cfg.d_model))
    return model


def hf_forward(model, enc, dec_in, target):
    """HF logits and per-block outputs (forward hooks), encoder and decoder."""
    blocks = {"enc": [], "dec": []}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: blocks[k].append(o[0] if isinstance(o, tuple) else o))
             for k, stack in (("enc", model.encoder), ("dec", model.decoder)) for b in stack.block]
    with torch.no_grad():
        out = model(input_ids=torch.tensor(enc, dtype=torch.long), attention_mask=torch.tensor(enc > 0),
                    decoder_input_ids=torch.tensor(dec_in, dtype=torch.long),
                    decoder_attention_mask=torch.tensor(target > 0), output_hidden_states=True)
    for h in hooks:
        h.remove()
    return {
        "logits": out.logits.numpy(),
        "enc": [out.encoder_hidden_states[0].numpy()] + [b.numpy() for b in blocks["enc"]],
        "enc_final": out.encoder_last_hidden_state.numpy(),
        "dec": [out.decoder_hidden_states[0].numpy()] + [b.numpy() for b in blocks["dec"]],
    }


@functools.lru_cache(maxsize=None)
def _jitted_forward(config):
    model = T5EncoderDecoder(config)
    return jax.jit(lambda p, a, b, c: model.apply({"params": p}, a, b, c, enable_dropout=False,
                                                  mutable=["intermediates"]))


def ours_forward(config, params, enc, dec_in, target):
    logits, state = _jitted_forward(config)(params, enc, dec_in, target)
    inter = state["intermediates"]
    return {"logits": np.asarray(logits), "enc": [np.asarray(h) for h in inter["encoder_hidden_states"][0]],
            "dec": [np.asarray(h) for h in inter["decoder_hidden_states"][0]]}


def max_diff(a, b, valid):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))[valid]))


@pytest.fixture(scope="module")
def batch(demo_corpus):
    return protein_batch(demo_corpus)


@pytest.fixture(scope="module")
def hf_cases(tmp_path_factory, batch):
    """name -> (name, torch model, saved folder, reference outputs), each variant built once."""
    cases = {}
    for name, (extra, untie) in VARIANTS.items():
        model = make_hf_model(extra, untie)
        path = tmp_path_factory.mktemp(name) / "hf"
        model.save_pretrained(path)
        cases[name] = (name, model, path, hf_forward(model, *batch))
    return cases


@pytest.fixture(params=sorted(VARIANTS))
def hf_case(request, hf_cases):
    return hf_cases[request.param]


@pytest.fixture
def relu_case(hf_cases):
    return hf_cases["v1_0_relu_untied"]


@pytest.fixture
def gated_case(hf_cases):
    return hf_cases["v1_1_gated_untied"]


def test_import_matches_hf_logits_and_every_layer(hf_case, batch):
    name, _, path, ref = hf_case
    enc, dec_in, target = batch
    config, params = import_t5(path)
    assert config.tie_word_embeddings == (name == "relu_tied")
    assert config.scales_decoder_outputs == (name != "v1_1_gated_untied")
    ours = ours_forward(config, params, enc, dec_in, target)
    ev, dv = enc > 0, target > 0
    assert max_diff(ours["logits"], ref["logits"], dv) < TOL
    assert len(ours["enc"]) == config.num_encoder_layers + 1 == len(ref["enc"])
    assert len(ours["dec"]) == config.num_decoder_layers + 1 == len(ref["dec"])
    for i, (a, b) in enumerate(zip(ours["enc"], ref["enc"])):
        assert max_diff(a, b, ev) < TOL, f"encoder hidden state {i}"
    for i, (a, b) in enumerate(zip(ours["dec"], ref["dec"])):
        assert max_diff(a, b, dv) < TOL, f"decoder hidden state {i}"
    # Encoder-only model on the same params subtree: every layer and the final normed state.
    enc_params = {k: params[k] for k in ("token_embedder", "encoder")}
    last, hidden = T5EncoderModel(config).apply({"params": enc_params}, enc, output_hidden_states=True)
    assert max_diff(last, ref["enc_final"], ev) < TOL
    for a, b in zip(hidden, ref["enc"]):
        assert max_diff(a, b, ev) < TOL


def test_export_loads_in_transformers_and_matches(hf_case, batch, tmp_path):
    name, hf_model, path, ref = hf_case
    enc, dec_in, target = batch
    config, params = import_t5(path)
    out = export_t5(config, params, tmp_path / "full")
    written = json.loads((out / "config.json").read_text())
    assert written["tie_word_embeddings"] is config.tie_word_embeddings
    loaded = load_clean(transformers.T5ForConditionalGeneration, out)
    tied_now = loaded.lm_head.weight.data_ptr() == loaded.shared.weight.data_ptr()
    if config.tie_word_embeddings:
        assert torch.equal(loaded.lm_head.weight, loaded.shared.weight)
    else:  # the trap: an untied export must stay untied
        assert not tied_now and not torch.equal(loaded.lm_head.weight, loaded.shared.weight)
        np.testing.assert_array_equal(loaded.lm_head.weight.detach().numpy(), hf_model.lm_head.weight.detach().numpy())
    again = hf_forward(loaded, enc, dec_in, target)
    assert max_diff(again["logits"], ref["logits"], target > 0) < TOL
    # Encoder-only export and T5EncoderModel, also from the full export.
    enc_dir = export_t5(config, params, tmp_path / "enc", encoder_only=True)
    for folder in (enc_dir, out):
        encoder, info = transformers.T5EncoderModel.from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"]
        with torch.no_grad():
            h = encoder.eval()(input_ids=torch.tensor(enc, dtype=torch.long),
                               attention_mask=torch.tensor(enc > 0)).last_hidden_state.numpy()
        assert max_diff(h, ref["enc_final"], enc > 0) < TOL
    # Our importer reads the encoder-only export back as T5EncoderModel params.
    enc_config, enc_params = import_t5(enc_dir)
    assert set(enc_params) == {"token_embedder", "encoder"}
    last = T5EncoderModel(enc_config).apply({"params": enc_params}, enc)
    assert max_diff(last, ref["enc_final"], enc > 0) < TOL


def test_tie_trap_load_state_dict_ties_but_from_pretrained_does_not(tmp_path, batch):
    """transformers 5 builds T5 with lm_head tied to shared: load_state_dict silently overwrites one of them."""
    enc, dec_in, target = batch
    hf_model = make_hf_model(*VARIANTS["v1_1_gated_untied"])
    ref = hf_forward(hf_model, enc, dec_in, target)
    hf_model.save_pretrained(tmp_path / "src")
    config, params = import_t5(tmp_path / "src")
    out = export_t5(config, params, tmp_path / "out")
    from safetensors.torch import load_file

    naive = transformers.T5ForConditionalGeneration(transformers.T5Config.from_pretrained(out)).eval()
    naive.load_state_dict(load_file(out / "model.safetensors"), strict=False)
    wrong = hf_forward(naive, enc, dec_in, target)["logits"]
    assert max_diff(wrong, ref["logits"], target > 0) > 1e-2  # the trap is real
    right = hf_forward(load_clean(transformers.T5ForConditionalGeneration, out), enc, dec_in, target)
    assert max_diff(right["logits"], ref["logits"], target > 0) < TOL


def test_scanned_import_and_export_round_trip(gated_case, batch, tmp_path):
    name, _, path, ref = gated_case
    enc, dec_in, target = batch
    config, params = import_t5(path, scan_layers=True)
    assert params["encoder"]["layers"]["attention"]["query"]["kernel"].shape[0] == config.num_encoder_layers
    ours = ours_forward(config, params, enc, dec_in, target)
    assert max_diff(ours["logits"], ref["logits"], target > 0) < TOL
    out = export_t5(config, params, tmp_path / "scanned")
    _, flat = import_t5(out)
    _, plain = import_t5(path)
    jax.tree_util.tree_map(np.testing.assert_array_equal, flat, plain)


def test_relative_position_buckets_match_hf():
    rel = np.arange(-700, 701)[None, :]
    for bidirectional in (True, False):
        for num_buckets, max_distance in ((32, 128), (64, 256), (16, 32)):
            ref = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
                torch.tensor(rel), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
            ).numpy()
            ours = layers.relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
            np.testing.assert_array_equal(ours, ref)


def test_released_prot_t5_config_converts(shared_data):
    path = shared_data / "tokenizers" / "prot_t5_xl_uniref50" / "config.json"
    hf_config = json.loads(path.read_text())
    # The release has a separate lm_head.weight; with it, the config is exactly our named config.
    assert t5_config_from_hf(hf_config, untied_lm_head=True) == get_config("prot_t5_xl_u50")
    config_only = t5_config_from_hf(hf_config)
    assert config_only.tie_word_embeddings and config_only.scales_decoder_outputs
    assert (config_only.d_model, config_only.d_ff, config_only.num_heads, config_only.num_encoder_layers) == (
        1024, 16384, 32, 24)
    # transformers reads the same file the same way: no tie key -> decoder outputs are scaled.
    assert transformers.T5Config(**hf_config).scale_decoder_outputs is True


def test_wrong_family_is_refused(tmp_path, relu_case):
    _, _, path, _ = relu_case
    bad = tmp_path / "bert"
    shutil.copytree(path, bad)
    (bad / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32, "vocab_size": 30}))
    with pytest.raises(CheckpointError, match=r"config\.json.*model_type 'bert' is not a T5"):
        import_t5(bad)
    assert issubclass(CheckpointError, ValueError)


def test_wrong_shape_and_missing_tensor_are_refused(tmp_path, relu_case):
    name, _, path, _ = relu_case
    from safetensors.numpy import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    mlp = "wi_0" if "gated" in name else "wi"
    key = f"encoder.block.1.layer.1.DenseReluDense.{mlp}.weight"
    bad = tmp_path / "shape"
    bad.mkdir()
    shutil.copy(path / "config.json", bad / "config.json")
    save_file({**tensors, key: np.zeros((65, 32), np.float32)}, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        import_t5(bad)
    msg = str(err.value)
    assert "model.safetensors" in msg and key in msg and "(65, 32)" in msg and "expected (64, 32)" in msg
    missing = tmp_path / "missing"
    missing.mkdir()
    shutil.copy(path / "config.json", missing / "config.json")
    save_file({k: v for k, v in tensors.items() if k != key}, str(missing / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"{key}.*missing"):
        import_t5(missing)


def test_pytorch_bin_checkpoints_import(tmp_path, gated_case, batch):
    _, hf_model, path, ref = gated_case
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(path / "config.json", legacy / "config.json")
    torch.save({k: v.clone() for k, v in hf_model.state_dict().items()}, legacy / "pytorch_model.bin")
    config, params = import_t5(legacy)
    ours = ours_forward(config, params, *batch)
    assert max_diff(ours["logits"], ref["logits"], batch[2] > 0) < TOL


def test_bfloat16_export(tmp_path, relu_case):
    import ml_dtypes

    _, _, path, _ = relu_case
    config, params = import_t5(path)
    out = export_t5(config, params, tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = load_clean(transformers.T5ForConditionalGeneration, out, dtype=torch.float32)
    rounded = params["token_embedder"]["embedding"].astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(loaded.shared.weight.detach().numpy(), rounded)
    _, again = import_t5(out)
    np.testing.assert_array_equal(again["token_embedder"]["embedding"], rounded)
