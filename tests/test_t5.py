"""Our T5: incremental decoding, packing, scan/remat equivalence, axis metadata, configs and counts."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import partitioning as nn_partitioning

from prottrans_jax import alphabet
from prottrans_jax.models import layers
from prottrans_jax.models.configs import count_params, get_config, list_configs
from prottrans_jax.models.t5 import T5Config, T5EncoderDecoder, T5EncoderModel
from proteins import read_proteins


def encode(seq, n):
    ids = alphabet.prot_t5_residue_ids()
    return [ids[a] for a in alphabet.normalize_sequence(seq)[:n]] + [alphabet.PROT_T5_EOS_ID]


def pad_rows(rows, width=None):
    width = width or max(map(len, rows))
    out = np.zeros((len(rows), width), np.int32)
    for r, row in enumerate(rows):
        out[r, : len(row)] = row
    return out


def shift_right(target, segment_ids=None):
    """Decoder inputs: targets shifted right with 0 at each (packed) sequence start."""
    dec_in = np.zeros_like(target)
    dec_in[:, 1:] = target[:, :-1]
    if segment_ids is not None:
        starts = np.zeros_like(segment_ids, bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        dec_in[starts] = 0
    return dec_in * (target > 0)


@pytest.fixture(scope="module")
def proteins(demo_corpus):
    return read_proteins(demo_corpus, 4)


@pytest.fixture(scope="module")
def tiny():
    return get_config("prot_t5_tiny")


def random_params(module, seed=0):
    """Random params of ``module``'s abstract shapes (numpy: compiling random initializers on CPU is slow)."""
    shapes = jax.eval_shape(lambda r: module.init(r, **module.dummy_inputs()), jax.random.key(0))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "scale":
            return (1.0 + 0.2 * rng.standard_normal(leaf.shape)).astype(np.float32)
        std = {"embedding": 1.0, "rel_embedding": 0.5}.get(name, leaf.shape[-2] ** -0.5 if leaf.ndim > 1 else 1.0)
        return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def tiny_params(tiny):
    return random_params(T5EncoderDecoder(tiny))


@functools.lru_cache(maxsize=None)
def forward_fn(config):
    """Jitted full forward of the encoder-decoder (one compile per config and input shapes)."""
    model = T5EncoderDecoder(config)
    return jax.jit(lambda p, *args: model.apply({"params": p}, *args, enable_dropout=False))


@pytest.fixture(scope="module")
def batch(proteins):
    """Real sequences of several lengths, padded: (enc [3, 15], dec_in [3, 12], target [3, 12])."""
    enc = pad_rows([encode(s, n) for s, n in zip(proteins, (9, 14, 5))])
    target = pad_rows([encode(s, n) for s, n in zip(proteins[1:], (11, 7, 3))])
    return enc, shift_right(target), target


@pytest.mark.parametrize("scan", [False, True])
def test_incremental_decoding_equals_full_decoding(tiny, tiny_params, batch, scan):
    config = tiny.replace(scan_layers=scan)
    params = layers.stack_layer_params(tiny_params) if scan else tiny_params
    model = T5EncoderDecoder(config)
    enc, dec_in, target = batch
    full = forward_fn(tiny)(tiny_params, enc, dec_in, target)  # unscanned reference for both
    length = target.shape[1]
    # The cache starts as zeros: its shapes come from an abstract decode=True init.
    abstract = jax.eval_shape(lambda r: model.init(r, enc, dec_in, target, decode=True, enable_dropout=False),
                              jax.random.key(0))
    cache = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), abstract["cache"])
    if scan:
        assert cache["decoder"]["layers"]["self_attention"]["cached_key"].shape[0] == config.num_decoder_layers

    @jax.jit
    def step(cache, token):
        encoded = model.apply({"params": params}, enc, enable_dropout=False, method=model.encode)
        return model.apply(
            {"params": params, "cache": cache}, encoded, enc, token, token, enable_dropout=False, decode=True,
            max_decode_length=length, mutable=["cache"], method=model.decode,
        )

    steps = []
    for t in range(length):
        logits, mutated = step(cache, dec_in[:, t : t + 1])
        cache = mutated["cache"]
        steps.append(np.asarray(logits[:, 0]))
    incremental = np.stack(steps, axis=1)
    valid = target > 0
    assert np.max(np.abs(incremental - np.asarray(full))[valid]) < 1e-5


def test_packed_sequences_equal_separate_runs(tiny, tiny_params, proteins):
    enc_a, enc_b = encode(proteins[0], 10), encode(proteins[1], 6)
    tgt_a, tgt_b = encode(proteins[2], 8), encode(proteins[3], 12)
    width = 24  # every run padded to one width: one compile; padding never reaches valid positions
    enc = pad_rows([enc_a + enc_b], width)
    target = pad_rows([tgt_a + tgt_b], width)
    enc_seg = pad_rows([[1] * len(enc_a) + [2] * len(enc_b)], width)
    dec_seg = pad_rows([[1] * len(tgt_a) + [2] * len(tgt_b)], width)
    forward = forward_fn(tiny)
    packed = np.asarray(forward(tiny_params, enc, shift_right(target, dec_seg), target, enc_seg, dec_seg))
    start = 0
    for e, t in ((enc_a, tgt_a), (enc_b, tgt_b)):
        alone_e, alone_t = pad_rows([e], width), pad_rows([t], width)
        seg_e, seg_t = (alone_e > 0).astype(np.int32), (alone_t > 0).astype(np.int32)
        alone = forward(tiny_params, alone_e, shift_right(alone_t), alone_t, seg_e, seg_t)
        np.testing.assert_allclose(packed[0, start : start + len(t)], np.asarray(alone[0, : len(t)]), atol=1e-5)
        start += len(t)
    # The encoder-only model packs the same way.
    enc_model = T5EncoderModel(tiny)
    enc_params = {k: tiny_params[k] for k in ("token_embedder", "encoder")}
    run = jax.jit(lambda p, x, s: enc_model.apply({"params": p}, x, encoder_segment_ids=s))
    packed_h = run(enc_params, enc, enc_seg)
    alone_b = pad_rows([enc_b], width)
    alone_h = run(enc_params, alone_b, (alone_b > 0).astype(np.int32))
    np.testing.assert_allclose(packed_h[0, len(enc_a) : len(enc_a) + len(enc_b)], alone_h[0, : len(enc_b)],
                               atol=1e-5)


def test_scan_and_remat_give_the_same_outputs_and_grads(tiny, tiny_params, batch):
    enc, dec_in, target = batch

    def loss_and_grad(config, params):
        model = T5EncoderDecoder(config)

        def loss(p):
            logits = model.apply({"params": p}, enc, dec_in, target, enable_dropout=False)
            return jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(target, config.vocab_size)), logits

        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return logits, grads

    ref_logits, ref_grads = loss_and_grad(tiny, tiny_params)
    # Scanned and rematerialized together (each alone is covered by HF parity / the remat fwd below).
    logits, grads = loss_and_grad(tiny.replace(scan_layers=True, remat_policy="full"),
                                  layers.stack_layer_params(tiny_params))
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    grads = layers.unstack_layer_params(grads)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads, ref_grads)
    remat_dots = forward_fn(tiny.replace(remat_policy="dots"))(tiny_params, enc, dec_in, target)
    np.testing.assert_allclose(remat_dots, ref_logits, atol=1e-5)


def test_every_param_has_logical_axes_from_the_vocabulary(tiny):
    for config in (tiny, tiny.replace(scan_layers=True, feed_forward_proj="gated-gelu", tie_word_embeddings=True)):
        model = T5EncoderDecoder(config)
        variables = jax.eval_shape(lambda r: model.init(r, **model.dummy_inputs()), jax.random.key(0))
        axes = nn_partitioning.get_axis_names(variables["params_axes"])
        leaves = jax.tree_util.tree_leaves_with_path(variables["params"])
        for path, leaf in leaves:
            spec = axes
            for key in path:
                spec = spec[key.key]
            assert len(spec) == leaf.ndim, path
            assert set(spec) <= set(layers.LOGICAL_AXES), (path, spec)
            if config.scan_layers and "layers" in {k.key for k in path}:
                assert spec[0] == "layers"
        names = {"/".join(k.key for k in p) for p, _ in leaves}
        assert ("decoder/logits_dense/kernel" in names) != config.tie_word_embeddings
        assert "encoder/relpos_bias/rel_embedding" in names and "token_embedder/embedding" in names


def test_dropout_and_bfloat16(tiny, tiny_params, batch):
    enc, dec_in, target = batch
    model = T5EncoderModel(tiny.replace(dropout_rate=0.3))
    enc_params = {k: tiny_params[k] for k in ("token_embedder", "encoder")}
    train = jax.jit(lambda p, r: model.apply({"params": p}, enc, enable_dropout=True, rngs={"dropout": r}))
    a, b = train(enc_params, jax.random.key(1)), train(enc_params, jax.random.key(2))
    assert np.all(np.isfinite(a)) and not np.allclose(a, b)
    ref = forward_fn(tiny)(tiny_params, enc, dec_in, target)
    half = forward_fn(tiny.replace(dtype=jnp.bfloat16))(tiny_params, enc, dec_in, target)
    assert half.dtype == jnp.float32  # logits stay float32
    assert np.max(np.abs(np.asarray(half) - np.asarray(ref))) < 0.25


def test_count_params_is_abstract_and_matches_prot_t5():
    before = len(jax.live_arrays())
    xl_encoder = count_params(get_config("prot_t5_xl_u50", scan_layers=True), encoder_only=True)
    xl = count_params(get_config("prot_t5_xl_u50", scan_layers=True))
    assert len(jax.live_arrays()) == before  # nothing allocated
    assert abs(xl_encoder - 1_208e6) / 1_208e6 < 0.005
    assert 2.8e9 <= xl <= 3.0e9
    # Scanned and unscanned count the same; a module works as well as a config.
    tiny = get_config("prot_t5_tiny")
    assert count_params(tiny) == count_params(tiny.replace(scan_layers=True)) == count_params(T5EncoderDecoder(tiny))


def test_config_registry_and_validation():
    names = list_configs()
    for name in ("prot_t5_xl_u50", "prot_t5_xl_bfd", "prot_t5_xxl_u50", "prot_t5_small", "prot_t5_tiny"):
        assert name in names
    xxl = get_config("prot_t5_xxl_u50")
    assert (xxl.d_ff, xxl.num_heads, xxl.d_model) == (65536, 128, 1024)
    xl = get_config("prot_t5_xl_u50")
    assert (xl.feed_forward_proj, xl.vocab_size, xl.tie_word_embeddings) == ("relu", 128, False)
    assert get_config("prot_t5_tiny", scan_layers=True).scan_layers
    with pytest.raises(KeyError, match="unknown model config"):
        get_config("no_such_model")
    with pytest.raises(ValueError, match="remat_policy"):
        T5Config(remat_policy="sometimes")
    assert T5Config(feed_forward_proj="gated-gelu").mlp_activations == ("gelu_new", "linear")
