"""Meshes, logical axis rules and sharded T5 on 8 fake CPU devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from prottrans_jax import partitioning
from prottrans_jax.models.configs import get_config
from prottrans_jax.models.t5 import T5EncoderDecoder, T5EncoderModel

# (rules, mesh shape, expected specs of: query kernel, embedding, mlp wi kernel, logits)
SETUPS = {
    "data_parallel": ("data", {"data": 8}, P(None, None), P(None, None), P(None, None), ("data", "fsdp", "model")),
    "model_parallel": ("model", {"data": 2, "model": 4}, P(None, "model"), P("model", None), P(None, "model"),
                       ("data", None, "model")),
    "fsdp": ("fsdp", {"data": 2, "fsdp": 2, "model": 2}, P("fsdp", "model"), P("model", "fsdp"), P("fsdp", "model"),
             (("data", "fsdp"), None, "model")),
}


@pytest.fixture(scope="module")
def setup():
    # One block per stack: sharding does not depend on depth, and compiles stay short.
    config = get_config("prot_t5_tiny", num_encoder_layers=1, num_decoder_layers=1)
    model = T5EncoderDecoder(config)
    # Random params from numpy (compiling random initializers is slow on CPU); init_sharded is tested below.
    rng = np.random.default_rng(0)
    shapes = partitioning.abstract_variables(model, **model.dummy_inputs())["params"]
    params = jax.tree_util.tree_map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
    enc = rng.integers(3, 28, (8, 16)).astype(np.int32)
    enc[::2, 12:] = 0  # padding
    target = rng.integers(3, 28, (8, 12)).astype(np.int32)
    dec_in = np.concatenate([np.zeros((8, 1), np.int32), target[:, :-1]], axis=1)
    ref = jax.jit(lambda p: model.apply({"params": p}, enc, dec_in, target, enable_dropout=False))(params)
    return config, model, params, (enc, dec_in, target), np.asarray(ref)


def test_make_mesh_shapes_and_errors():
    assert jax.device_count() == 8
    mesh = partitioning.make_mesh({"data": 2, "model": 4})
    assert mesh.axis_names == ("data", "fsdp", "model")
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "model": 4}
    assert dict(partitioning.make_mesh().shape) == {"data": 8, "fsdp": 1, "model": 1}
    assert dict(partitioning.make_mesh({"model": 2, "data": -1}).shape)["data"] == 4
    with pytest.raises(ValueError, match="needs 6 devices but 8"):
        partitioning.make_mesh({"data": 2, "model": 3})
    with pytest.raises(ValueError, match="unknown mesh axes"):
        partitioning.make_mesh({"tensor": 8})
    with pytest.raises(ValueError, match="unknown logical axis rules"):
        partitioning.get_rules("pipeline")


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_sharded_t5_matches_unsharded(setup, name):
    rules, shape, query_spec, embed_spec, wi_spec, logits_axes = SETUPS[name]
    config, model, params, inputs, ref = setup
    mesh = partitioning.make_mesh(shape)
    shardings = partitioning.params_shardings(model, mesh, rules)
    # Existing (e.g. imported) params placed onto the rules' shardings...
    sharded = partitioning.shard_params(params, shardings)
    layer0 = sharded["encoder"]["layers_0"]
    assert layer0["attention"]["query"]["kernel"].sharding.spec == query_spec
    assert sharded["token_embedder"]["embedding"].sharding.spec == embed_spec
    assert layer0["mlp"]["wi"]["kernel"].sharding.spec == wi_spec
    kernel = layer0["attention"]["query"]["kernel"]  # [embed 32, joined_kv 32]
    expected_shard = tuple(d // _axis_size(mesh, s) for d, s in zip(kernel.shape, query_spec))
    assert {s.data.shape for s in kernel.addressable_shards} == {expected_shard}
    # ...give the unsharded outputs, sharded as the rules say.
    run = partitioning.sharded_apply(model, mesh, rules, shardings, static_kwargs={"enable_dropout": False})
    logits = run(sharded, *inputs)
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-5)
    assert logits.sharding.is_equivalent_to(NamedSharding(mesh, P(*logits_axes)), logits.ndim)
    if name != "data_parallel":
        assert len({s.data.shape for s in logits.addressable_shards}) == 1
        assert logits.addressable_shards[0].data.shape[-1] == config.vocab_size // mesh.shape["model"]


def test_init_sharded_places_params_directly(setup):
    _, model, params, _, _ = setup
    mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    fresh = partitioning.init_sharded(model, jax.random.key(0), mesh, "fsdp")
    shardings = partitioning.params_shardings(model, mesh, "fsdp")
    jax.tree_util.tree_map(lambda x, s: assert_same_sharding(x, s), fresh, shardings)
    assert jax.tree_util.tree_map(lambda x: x.shape, fresh) == jax.tree_util.tree_map(lambda x: x.shape, params)
    assert fresh["encoder"]["layers_0"]["mlp"]["wi"]["kernel"].addressable_shards[0].data.shape == (16, 32)


def assert_same_sharding(x, sharding):
    assert x.sharding.is_equivalent_to(sharding, x.ndim), (x.sharding, sharding)


def test_sharded_encoder_model_activations(setup):
    config, _, params, (enc, _, _), _ = setup
    model = T5EncoderModel(config)
    enc_params = {k: params[k] for k in ("token_embedder", "encoder")}
    ref = jax.jit(lambda p: model.apply({"params": p}, enc))(enc_params)
    mesh = partitioning.make_mesh({"data": 2, "model": 4})
    shardings = partitioning.params_shardings(model, mesh, "model")
    run = partitioning.sharded_apply(model, mesh, "model", shardings)
    hidden = run(partitioning.shard_params(enc_params, shardings), enc)
    np.testing.assert_allclose(np.asarray(hidden), np.asarray(ref), atol=1e-5)
    # [batch, length, embed]: batch over 'data', embed replicated (t5x's standard rules).
    assert hidden.sharding.is_equivalent_to(NamedSharding(mesh, P("data", None, None)), 3)
    assert hidden.addressable_shards[0].data.shape == (4, 16, config.d_model)


def test_scanned_params_shard_with_a_replicated_layers_axis():
    config = get_config("prot_t5_tiny", scan_layers=True)
    model = T5EncoderDecoder(config)
    mesh = partitioning.make_mesh({"data": 2, "model": 4})
    shardings = partitioning.params_shardings(model, mesh, "model")
    assert shardings["encoder"]["layers"]["attention"]["query"]["kernel"].spec == P(None, None, "model")
    logical = partitioning.logical_axes(partitioning.abstract_variables(model, **model.dummy_inputs()))
    assert logical["encoder"]["layers"]["mlp"]["wo"]["kernel"] == P("layers", "mlp", "embed")


def _axis_size(mesh, spec_entry):
    if spec_entry is None:
        return 1
    names = spec_entry if isinstance(spec_entry, tuple) else (spec_entry,)
    return int(np.prod([mesh.shape[n] for n in names]))


def test_undividable_dimensions_stay_whole_under_model_parallelism():
    """ProtBert's 30-token vocabulary over a 4-way 'model' axis: replicated there, the rest sharded."""
    from prottrans_jax.models import configs

    config = configs.get_config("prot_bert_tiny")
    module = configs.build_model(config)
    mesh = partitioning.make_mesh({"data": 2, "model": 4})
    shardings = partitioning.params_shardings(module, mesh, "model")
    word = shardings["embeddings"]["word_embeddings"]["embedding"]
    assert config.vocab_size % 4 and all(axis is None for axis in word.spec)
    wi = shardings["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
    assert "model" in str(wi.spec)
    params = partitioning.init_sharded(module, jax.random.key(0), mesh, "model")
    assert params["embeddings"]["word_embeddings"]["embedding"].shape[0] == 30
