"""BERT-family networks without torch: sharding on 8 fake devices, scan/remat, packing, ELECTRA sharing, configs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from prottrans_jax import alphabet, partitioning
from prottrans_jax.models import encoder_configs, layers
from prottrans_jax.models.albert import AlbertForMaskedLM
from prottrans_jax.models.bert import BertForMaskedLM, positions_from_segments
from prottrans_jax.models.electra import (
    ElectraForMaskedLM,
    ElectraForPreTraining,
    ElectraPretrainingModel,
    merge_pretraining_params,
    split_pretraining_params,
)

RULES_AND_MESHES = {
    "data": {"data": 8},
    "model": {"data": 2, "model": 4},
    "fsdp": {"data": 2, "fsdp": 2, "model": 2},
}


def residue_batch(demo_corpus, batch=8, length=24):
    """Real residues as ProtBert ids, [CLS] ... [SEP], lengths varying from ``length`` down (padded)."""
    import gzip

    ids = alphabet.prot_bert_residue_ids()
    seqs = []
    with gzip.open(demo_corpus, "rt") as fh:
        for line in fh:
            if not line.startswith(">"):
                seqs.append(alphabet.normalize_sequence(line.strip()))
            if len(seqs) == batch:
                break
    out = np.zeros((batch, length), np.int32)
    for r, s in enumerate(seqs):
        n = length - 2 - 2 * r
        out[r, : n + 2] = [alphabet.PROT_BERT_CLS_ID] + [ids[a] for a in s[:n]] + [alphabet.PROT_BERT_SEP_ID]
    return out, (out != 0).astype(np.int32)


def init(module, seed=0):
    """Random params of the module's shapes, drawn on the host (no XLA compile of ``init``: faster tests)."""
    shapes = jax.eval_shape(lambda r: module.init(r, **module.dummy_inputs()), jax.random.key(0))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, s):
        base = 1.0 if path[-1].key == "scale" else 0.0  # LayerNorm scales near 1
        return (base + rng.normal(0.0, 0.2, s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def run(module, params, *args, **kwargs):
    """``module.apply`` under jit (eager op-by-op dispatch is far slower on the fake devices)."""
    return jax.jit(lambda p, *a: module.apply({"params": p}, *a, **kwargs))(params, *args)


@pytest.fixture(scope="module")
def tiny_bert():
    # vocab padded to 32 so the vocabulary dimension divides the model axis (4).
    config = encoder_configs.get_encoder_config("prot_bert_tiny", vocab_size=32)
    module = BertForMaskedLM(config)
    return config, module, init(module)


@pytest.mark.parametrize("rules", list(RULES_AND_MESHES))
def test_sharding(rules, tiny_bert, demo_corpus):
    config, module, params = tiny_bert
    ids, mask = residue_batch(demo_corpus)
    ref_logits, ref_hidden = run(module, params, ids, mask, output_hidden_states=True)

    mesh = partitioning.make_mesh(RULES_AND_MESHES[rules])
    shardings = partitioning.params_shardings(module, mesh, rules)
    sharded = partitioning.shard_params(params, shardings)
    query = sharded["encoder"]["layers_0"]["attention"]["query"]["kernel"]  # [embed, joined_kv] = [32, 32]
    wi = sharded["encoder"]["layers_1"]["mlp"]["wi"]["kernel"]  # [embed, mlp] = [32, 64]
    table = sharded["embeddings"]["word_embeddings"]["embedding"]  # [vocab, embed] = [32, 32]
    expected = {
        "data": (P(None, None), (32, 32), (32, 64)),
        "model": (P(None, "model"), (32, 8), (32, 16)),
        "fsdp": (P("fsdp", "model"), (16, 16), (16, 32)),
    }[rules]
    assert query.sharding.spec == expected[0]
    assert query.addressable_shards[0].data.shape == expected[1]
    assert wi.addressable_shards[0].data.shape == expected[2]
    if rules != "data":
        assert table.addressable_shards[0].data.shape[0] == 32 // mesh.shape["model"]

    fn = partitioning.sharded_apply(module, mesh, rules, shardings, static_kwargs={"output_hidden_states": True})
    logits, hidden = fn(sharded, ids, mask)
    batch_shards = {"data": 8, "model": 2, "fsdp": 4}[rules]
    vocab_shards = 1 if rules == "data" else mesh.shape["model"]
    # Activations follow the in-model constraints: batch split, vocab split over 'model'.
    assert logits.sharding.shard_shape(logits.shape) == (8 // batch_shards, ids.shape[1], 32 // vocab_shards)
    assert hidden[1].sharding.shard_shape(hidden[1].shape) == (8 // batch_shards, ids.shape[1], 32)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-5, rtol=0)
    for a, b in zip(hidden, ref_hidden):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


def test_scanned_params_shard_and_axes_are_logical(tiny_bert):
    config, module, params = tiny_bert
    scanned = BertForMaskedLM(config.replace(scan_layers=True))
    mesh = partitioning.make_mesh(RULES_AND_MESHES["model"])
    stacked = partitioning.shard_params(layers.stack_layer_params(params),
                                        partitioning.params_shardings(scanned, mesh, "model"))
    wo = stacked["encoder"]["layers"]["mlp"]["wo"]["kernel"]  # [layers, mlp, embed]
    assert wo.shape == (2, 64, 32) and wo.sharding.spec == P(None, "model", None)
    assert wo.addressable_shards[0].data.shape == (2, 16, 32)
    for m in (module, scanned, ElectraPretrainingModel(encoder_configs.get_encoder_config("prot_electra_tiny")),
              AlbertForMaskedLM(encoder_configs.get_encoder_config("prot_albert_tiny"))):
        specs = partitioning.logical_axes(partitioning.abstract_variables(m, **m.dummy_inputs()))
        names = {a for spec in jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, P)) for a in spec}
        assert names - {None} <= set(layers.LOGICAL_AXES)


@pytest.mark.parametrize("name,cls", [("prot_bert_tiny", BertForMaskedLM), ("prot_albert_tiny", AlbertForMaskedLM),
                                      ("prot_electra_discriminator_tiny", ElectraForPreTraining)])
def test_scan_and_remat_equal_unscanned(name, cls, demo_corpus):
    ids, mask = residue_batch(demo_corpus, batch=2)
    config = encoder_configs.get_encoder_config(name)
    params = init(cls(config))
    ref, ref_hidden = run(cls(config), params, ids, mask, output_hidden_states=True)
    scanned_cfg = config.replace(scan_layers=True, remat_policy="dots")
    stacked = layers.stack_layer_params(params)
    assert jax.tree_util.tree_structure(stacked) == jax.tree_util.tree_structure(init(cls(scanned_cfg)))
    out, hidden = run(cls(scanned_cfg), stacked, ids, mask, output_hidden_states=True)
    assert len(hidden) == len(ref_hidden) == config.num_layers + 1
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(hidden[-1]), np.asarray(ref_hidden[-1]), atol=1e-5, rtol=0)


def test_packed_segments_equal_separate(tiny_bert, demo_corpus):
    """Two sequences packed in one row (segment ids, restarting positions) = each run alone (padded batch)."""
    config, module, params = tiny_bert
    ids, mask = residue_batch(demo_corpus, batch=2, length=16)
    la, lb = mask.sum(1)
    packed = np.zeros((1, 32), np.int32)
    packed[0, :la], packed[0, la: la + lb] = ids[0, :la], ids[1, :lb]
    segments = np.zeros_like(packed)
    segments[0, :la], segments[0, la: la + lb] = 1, 2
    positions = np.asarray(positions_from_segments(jnp.asarray(segments)))[0]
    assert list(positions[la - 1: la + 2]) == [la - 1, 0, 1]
    out = np.asarray(run(module, params, packed, None, None, None, segments))
    alone = np.asarray(run(module, params, ids, mask))
    np.testing.assert_allclose(out[0, :la], alone[0, :la], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out[0, la: la + lb], alone[1, :lb], atol=1e-5, rtol=0)


def test_electra_shares_one_embedding(demo_corpus):
    config = encoder_configs.get_encoder_config("prot_electra_tiny")
    model = ElectraPretrainingModel(config)
    params = init(model)
    assert set(params) == {"embeddings", "generator", "discriminator"}
    assert "embeddings" not in params["generator"] and "embeddings" not in params["discriminator"]
    assert "embeddings_project" in params["generator"]  # generator width 16 < shared embedding width 32
    ids, mask = residue_batch(demo_corpus, batch=2)

    # Changing the one shared word table changes both networks' outputs.
    apply = jax.jit(lambda p: model.apply({"params": p}, ids, None, mask))
    gen, disc = apply(params)
    table = params["embeddings"]["word_embeddings"]["embedding"]
    noise = np.random.default_rng(1).normal(0.0, 0.5, table.shape).astype(np.float32)
    bumped = {**params, "embeddings": {**params["embeddings"], "word_embeddings": {"embedding": table + noise}}}
    gen2, disc2 = apply(bumped)
    assert np.abs(gen2 - gen).max() > 1e-3 and np.abs(disc2 - disc).max() > 1e-3
    # Standalone trees reproduce the pair's outputs; splitting and merging round-trips.
    gen_p, disc_p = split_pretraining_params(params)
    np.testing.assert_allclose(run(ElectraForMaskedLM(config.generator), gen_p, ids, mask), gen, atol=1e-6)
    np.testing.assert_allclose(run(ElectraForPreTraining(config.discriminator), disc_p, ids, mask), disc, atol=1e-6)
    assert jax.tree_util.tree_structure(merge_pretraining_params(gen_p, disc_p)) == jax.tree_util.tree_structure(
        params)
    with pytest.raises(ValueError, match="embedding_dim must match"):
        config.replace(generator=config.generator.replace(embedding_size=16))


def test_named_configs():
    def count(module):
        shapes = jax.eval_shape(lambda r: module.init(r, **module.dummy_inputs()), jax.random.key(0))
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))

    # ProtBert is ~420 M parameters (HF counts its unused pooler too: +1 M).
    assert 418e6 < count(BertForMaskedLM(encoder_configs.get_encoder_config("prot_bert"))) < 421e6
    albert = encoder_configs.get_encoder_config("prot_albert")
    assert (albert.hidden_size, albert.num_heads, albert.embedding_size, albert.num_layers) == (4096, 64, 128, 12)
    electra = encoder_configs.get_encoder_config("prot_electra")
    assert electra.generator.hidden_size * 4 == electra.discriminator.hidden_size == 1024
    assert encoder_configs.get_encoder_config("prot_bert_bfd", scan_layers=True).scan_layers
    for name in encoder_configs.ENCODER_CONFIGS:  # every named config builds both ways
        config = encoder_configs.get_encoder_config(name)
        assert hasattr(encoder_configs.build_encoder_model(config, encoder_only=True), "encode")
        assert encoder_configs.build_encoder_model(config).dummy_inputs()
    with pytest.raises(KeyError, match="prot_bert_tiny"):
        encoder_configs.get_encoder_config("prot_bret")
