"""Transformer-XL properties on real proteins: causality, recurrence, no gradient through memory, clamping, sharding.

transformers 5 has no TransfoXL, so these test the model's defining properties directly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_dirs import random_params
from proteins import read_proteins

from prottrans_jax import alphabet, partitioning
from prottrans_jax.models import configs, layers
from prottrans_jax.models.transfo_xl import TransfoXLLMHeadModel, causal_mask

# ProtBert's ids (the vocabulary of the ProtTXL configs).
RESIDUE_IDS = alphabet.prot_bert_residue_ids()
FIRST, SECOND = 12, 10  # residues in the two segments


def encode(seq: str) -> list[int]:
    return [RESIDUE_IDS[c] for c in alphabet.normalize_sequence(seq)]


@pytest.fixture(scope="module")
def ids(demo_corpus):
    """``[8, FIRST + SECOND]`` ids of eight real proteins."""
    seqs = read_proteins(demo_corpus, 8)
    return jnp.asarray([encode(s[: FIRST + SECOND]) for s in seqs], jnp.int32)


@pytest.fixture(scope="module")
def model():
    """Tiny ProtTXL (memory 16 >= FIRST) with perturbed random weights: ``(config, params)``."""
    config = configs.get_config("prot_txl_tiny")
    assert config.mem_len >= FIRST and not config.same_length
    return config, random_params(config, seed=1)


@functools.cache
def _compiled(config, output_hidden_states):
    module = TransfoXLLMHeadModel(config)
    return jax.jit(lambda p, i, **kw: module.apply({"params": p}, i, output_hidden_states=output_hidden_states, **kw))


def run(config, params, ids, output_hidden_states=False, **kwargs):
    """The model's output for ``ids`` (one compiled function per config)."""
    return _compiled(config, output_hidden_states)(params, ids, **kwargs)


def test_causality(model, ids):
    """Changing later tokens leaves every earlier logit unchanged, with and without memory."""
    config, params = model
    changed = ids.at[:, FIRST + 4:].set(5 + (ids[:, FIRST + 4:] - 4) % 25)  # other residues from position 4 on
    assert np.all(np.asarray(changed[:, FIRST + 4:] != ids[:, FIRST + 4:]))
    for mems in (None, run(config, params, ids[:3, :FIRST]).mems):
        a = run(config, params, ids[:3, FIRST:], mems=mems).logits
        b = run(config, params, changed[:3, FIRST:], mems=mems).logits
        np.testing.assert_array_equal(a[:, :4], b[:, :4])
        assert np.abs(a[:, 4:] - b[:, 4:]).max(axis=-1).min() > 1e-4


def test_two_segments_with_memory_equal_one_run_over_both(model, ids):
    """Segment-level recurrence: logits, hidden states and the next memory match the concatenated run."""
    config, params = model
    first = run(config, params, ids[:3, :FIRST])
    assert first.mems.shape == (3, config.n_layer, FIRST, config.d_model)
    second = run(config, params, ids[:3, FIRST:], mems=first.mems, output_hidden_states=True)
    full = run(config, params, ids[:3], output_hidden_states=True)
    assert np.abs(second.logits - full.logits[:, FIRST:]).max() < 1e-5
    for a, b in zip(second.hidden_states, full.hidden_states):
        assert np.abs(a - b[:, FIRST:]).max() < 1e-5
    # memory = each layer's input over the last mem_len positions of everything seen so far
    want = np.stack([h[:, -config.mem_len:] for h in full.hidden_states[:-1]], axis=1)
    assert np.abs(second.mems - want).max() < 1e-5


def test_no_gradient_flows_through_memory(model, ids):
    """Segment 2's loss depends on segment 1's embeddings (through memory) but has zero gradient to them."""
    config, params = model
    module = TransfoXLLMHeadModel(config)
    embed = params["word_embeddings"]["embedding"][np.asarray(ids[:2, :FIRST])] * np.sqrt(config.d_model)

    def second_loss(first_embeds):
        mems = module.apply({"params": params}, inputs_embeds=first_embeds).mems
        logits = module.apply({"params": params}, ids[:2, FIRST:], mems=mems).logits
        return jnp.sum(jax.nn.log_softmax(logits)[..., 7])

    grad = jax.jit(jax.grad(second_loss))(embed)
    assert not np.any(np.asarray(grad))
    loss = jax.jit(second_loss)
    assert abs(loss(embed) - loss(embed * 1.5)) > 1e-3  # the value does depend on them
    first_loss = lambda e: jnp.sum(module.apply({"params": params}, inputs_embeds=e).logits)  # noqa: E731
    assert np.abs(jax.jit(jax.grad(first_loss))(embed)).max() > 0  # gradients flow where there is no memory


def test_clamp_len(model, ids):
    """Clamping at 5: queries that see only distances <= 5 are unchanged, later ones change."""
    config, params = model
    plain = run(config, params, ids[:2]).logits
    clamped = run(config.replace(clamp_len=5), params, ids[:2]).logits
    np.testing.assert_allclose(clamped[:, :6], plain[:, :6], atol=1e-6)
    assert np.abs(clamped[:, 6:] - plain[:, 6:]).max(axis=-1).min() > 1e-4
    np.testing.assert_array_equal(run(config.replace(clamp_len=FIRST + SECOND), params, ids[:2]).logits, plain)


def test_attention_mask_and_same_length(model, ids):
    """Masked left padding leaves the real tokens' logits as without it; same_length masks per HF's rule."""
    config, params = model
    padded = jnp.concatenate([jnp.zeros((2, 4), jnp.int32), ids[:2, :FIRST]], axis=1)
    mask = (padded != 0).astype(jnp.int32)
    with_pad = run(config, params, padded, attention_mask=mask).logits[:, 4:]
    assert np.abs(with_pad - run(config, params, ids[:2, :FIRST]).logits).max() < 1e-5
    same = causal_mask(qlen=4, mlen=4, mem_len=4, same_length=True)  # True = masked
    assert same.shape == (4, 8) and (~same).sum(axis=1).tolist() == [4, 4, 4, 4]
    assert [int(np.flatnonzero(~row)[0]) for row in same] == [1, 2, 3, 4]  # each sees the 4 keys before it
    assert (~causal_mask(4, 4, 4, same_length=False)).sum(axis=1).tolist() == [5, 6, 7, 8]


def test_scan_and_remat_equal_unscanned(model, ids):
    config, params = model
    scanned = config.replace(scan_layers=True, remat_policy="full")
    stacked = layers.stack_layer_params(params)
    assert stacked["stack"]["layers"]["attention"]["qkv"]["kernel"].shape == (2, 32, 96)
    first = run(config, params, ids[:2, :FIRST])
    want = run(config, params, ids[:2, FIRST:], mems=first.mems, output_hidden_states=True)
    got = run(scanned, stacked, ids[:2, FIRST:], mems=first.mems, output_hidden_states=True)
    for a, b in [(got.logits, want.logits), (got.mems, want.mems)] + list(zip(got.hidden_states, want.hidden_states)):
        assert np.abs(a - b).max() < 1e-5


def test_bias_sharing_and_sizes():
    """untie_r: one r_w_bias/r_r_bias pair shared (ProtTXL) or one per layer; ProtTXL near the paper's 562 M."""
    def shapes(config):
        module = TransfoXLLMHeadModel(config)
        return jax.eval_shape(lambda k: module.init(k, **module.dummy_inputs()), jax.random.key(0))["params"]

    shared = configs.get_config("prot_txl_tiny")
    p_shared, p_untied = shapes(shared), shapes(shared.replace(untie_r=True))
    assert p_shared["r_w_bias"].shape == (4, 8) and "r_w_bias" not in p_shared["stack"]["layers_0"]["attention"]
    assert "r_w_bias" not in p_untied and p_untied["stack"]["layers_1"]["attention"]["r_r_bias"].shape == (4, 8)
    count = configs.count_params(configs.get_config("prot_txl", scan_layers=True))
    assert abs(count - 562e6) / 562e6 < 0.005
    assert configs.get_config("prot_txl_bfd") == configs.get_config("prot_txl")


@pytest.mark.parametrize("rules,mesh_shape", [("data", {"data": 8}), ("model", {"data": 2, "model": 4})])
def test_sharded_equals_unsharded(model, ids, rules, mesh_shape):
    """8 fake devices: logits and the next memory equal the unsharded run within 1e-5."""
    config, params = model
    module = TransfoXLLMHeadModel(config)
    mems = run(config, params, ids[:, :FIRST]).mems  # [8, layers, FIRST, embed]

    def call(m, i, mem):
        out = m(i, mems=mem)
        return out.logits, out.mems

    mesh = partitioning.make_mesh(mesh_shape)
    shardings = partitioning.params_shardings(module, mesh, rules)
    got = partitioning.sharded_apply(module, mesh, rules, shardings, method=call)(
        partitioning.shard_params(params, shardings), ids[:, FIRST:], mems)
    want = module.apply({"params": params}, ids[:, FIRST:], mems, method=call)
    for a, b in zip(got, want):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() < 1e-5
