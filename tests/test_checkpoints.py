"""Tests for prottrans_jax.checkpoints: round trips, sharded restore, retention, atomicity, refusals, preemption."""

import functools
import os
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from prottrans_jax import checkpoints
from prottrans_jax.checkpoints import IncompatibleCheckpointError, TrainCheckpointer

CONFIG = {"model.d_model": 8, "model.num_layers": 1, "optimizer": "adafactor", "learning_rate": 1e-3}


def _params(d_model=8):
    k1, k2 = jax.random.split(jax.random.key(1))
    return {"encoder": {"layers_0": {"kernel": jax.random.normal(k1, (4, d_model)),
                                     "scale": jax.random.uniform(k2, (d_model,), dtype=jnp.bfloat16)}},
            "embedding": jnp.arange(3 * d_model, dtype=jnp.float32).reshape(3, d_model)}


@functools.lru_cache(maxsize=None)
def _opt_state(d_model):
    """Adafactor and AdamW states after one update (jitted: eager optax costs ~10 s of CPU compiles)."""
    adafactor, adamw = optax.adafactor(1e-2), optax.adamw(1e-3)

    def init_and_step(params):
        grads = jax.tree_util.tree_map(lambda x: jnp.ones_like(x) * 0.5, params)
        _, s0 = adafactor.update(grads, adafactor.init(params), params)
        _, s1 = adamw.update(grads, adamw.init(params), params)
        return s0, s1

    return jax.jit(init_and_step)(_params(d_model))


def _state(d_model=8, step=7):
    return {"params": _params(d_model), "opt_state": _opt_state(d_model), "step": jnp.asarray(step, jnp.int32),
            "rng": jax.random.key(42)}


def _meta(config=CONFIG, position=7):
    return {"config": config, "config_fingerprint": checkpoints.config_fingerprint(config),
            "model": "T5Tiny", "data_position": position}


def _abstract(tree, sharding_fn=lambda path, x: None):
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_fn(p, x)), tree)


def _assert_bitwise_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if checkpoints._is_key(x):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_round_trip_is_bitwise_exact(tmp_path):
    state = _state()
    with TrainCheckpointer(str(tmp_path), save_every=1, async_save=False) as ckpt:
        assert ckpt.save(7, state, _meta(), force=True)
        assert ckpt.latest_step() == 7
        assert {"meta", "state", "commit_success.txt"} <= set(os.listdir(tmp_path / "checkpoint_7"))
        restored, meta = ckpt.restore(abstract_state=_abstract(state), expected_config=CONFIG)
        _assert_bitwise_equal(restored, state)
        assert jax.random.key_impl(restored["rng"]) == jax.random.key_impl(state["rng"])
        assert meta["data_position"] == 7 and meta["model"] == "T5Tiny" and meta["jax_version"] == jax.__version__
        assert meta["config_fingerprint"] == checkpoints.config_fingerprint(CONFIG) and "created" in meta
        # Without a target the tree comes back as saved (namedtuples become containers), values exact.
        plain, _ = ckpt.restore(7)
        assert np.array_equal(np.asarray(plain["params"]["embedding"]), np.asarray(state["params"]["embedding"]))
        assert checkpoints._is_key(plain["rng"])


def test_restore_onto_sharded_mesh(tmp_path):
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    model_sharded = NamedSharding(mesh, P(None, "model"))
    replicated = NamedSharding(mesh, P())

    def sharding_fn(path, x):
        if checkpoints._is_key(x):
            return NamedSharding(mesh, P("data"))
        return model_sharded if x.ndim == 2 and x.shape[1] % 4 == 0 else replicated

    params = _params()
    state = {"params": jax.device_put(params, jax.tree_util.tree_map_with_path(sharding_fn, params)),
             "step": jnp.asarray(3), "rng": jax.random.key_data(jax.random.key(0)),
             "typed_keys": jax.device_put(jax.random.split(jax.random.key(5), 8), replicated)}
    with TrainCheckpointer(str(tmp_path), async_save=False) as ckpt:
        ckpt.save(3, state, _meta(), force=True)
        restored, _ = ckpt.restore(abstract_state=_abstract(state, sharding_fn))
    kernel = restored["params"]["encoder"]["layers_0"]["kernel"]
    assert kernel.sharding.is_equivalent_to(model_sharded, 2)
    assert {s.data.shape for s in kernel.addressable_shards} == {(4, 2)}
    assert restored["params"]["embedding"].sharding.is_equivalent_to(model_sharded, 2)
    assert restored["rng"].dtype == jnp.uint32  # raw key data stays raw
    assert checkpoints._is_key(restored["typed_keys"])
    assert restored["typed_keys"].sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 1)
    _assert_bitwise_equal(restored, state)


def test_save_every_and_keep_last_n(tmp_path):
    state = {"w": jnp.ones(3), "step": jnp.asarray(0)}
    with TrainCheckpointer(str(tmp_path), keep=2, save_every=5) as ckpt:
        saved = [s for s in range(1, 13) if ckpt.save(s, state, {"config_fingerprint": "x"})]
        assert saved == [5, 10]
        assert ckpt.save(12, state, {"config_fingerprint": "x"}, force=True)
        assert not ckpt.save(12, state, {"config_fingerprint": "x"}, force=True)  # already there: no error
        ckpt.wait()
        assert ckpt.all_steps() == [10, 12]
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("checkpoint_")) == ["checkpoint_10", "checkpoint_12"]


def test_interrupted_save_is_ignored(tmp_path):
    good = {"w": jnp.arange(4.0), "step": jnp.asarray(5)}
    with TrainCheckpointer(str(tmp_path), async_save=False) as ckpt:
        ckpt.save(5, good, _meta(), force=True)
    # What a crash leaves behind: Orbax's temporary directory (never renamed) and a directory with the
    # final name but no commit file (e.g. a partial copy, or a non-atomic rename on a FUSE mount).
    tmp_dir = tmp_path / "checkpoint_7.orbax-checkpoint-tmp-1700000000000000"
    shutil.copytree(tmp_path / "checkpoint_5", tmp_dir)
    half = tmp_path / "checkpoint_9"
    shutil.copytree(tmp_path / "checkpoint_5", half)
    (half / checkpoints.COMMIT_FILE).unlink()
    with TrainCheckpointer(str(tmp_path), async_save=False) as ckpt:
        assert ckpt.latest_step() == 5
        restored, meta = ckpt.restore(abstract_state=_abstract(good))
        assert meta["step"] == 5 and np.array_equal(restored["w"], good["w"])
        with pytest.raises(FileNotFoundError, match="checkpoint_9"):
            ckpt.restore(9)
        # Saving the same step later sets the unfinished directory aside instead of failing.
        assert ckpt.save(9, {"w": jnp.zeros(4), "step": jnp.asarray(9)}, _meta(), force=True)
        assert ckpt.latest_step() == 9
    assert not tmp_dir.exists()  # Orbax cleans its temporaries when a manager opens the directory
    assert any(p.startswith("checkpoint_9.unfinished-") for p in os.listdir(tmp_path))


def test_incompatible_fingerprint_is_refused(tmp_path):
    state = _state()
    with TrainCheckpointer(str(tmp_path), async_save=False) as ckpt:
        ckpt.save(7, state, _meta(), force=True)
        other = dict(CONFIG, **{"model.d_model": 16, "learning_rate": 5e-4})
        with pytest.raises(IncompatibleCheckpointError) as err:
            ckpt.restore(abstract_state=_abstract(state), expected_config=other)
        msg = str(err.value)
        assert str(tmp_path / "checkpoint_7") in msg
        assert "model.d_model: 8 saved vs 16 now" in msg and "learning_rate" not in msg
        with pytest.raises(ValueError, match="fingerprint"):
            ckpt.restore(expected_fingerprint=checkpoints.config_fingerprint(other))


def test_incompatible_shapes_are_refused(tmp_path):
    with TrainCheckpointer(str(tmp_path), async_save=False) as ckpt:
        ckpt.save(7, _state(), _meta(), force=True)
        wider = _abstract(_state(d_model=16))
        with pytest.raises(IncompatibleCheckpointError) as err:
            ckpt.restore(abstract_state=wider, expected_config=CONFIG)
        msg = str(err.value)
        assert str(tmp_path / "checkpoint_7") in msg
        assert "params/encoder/layers_0/kernel: saved shape (4, 8) vs expected (4, 16)" in msg
        fewer = _abstract(_state())
        del fewer["params"]["embedding"]
        fewer["params"]["decoder"] = jax.ShapeDtypeStruct((2,), jnp.float32)
        with pytest.raises(IncompatibleCheckpointError, match="missing from the checkpoint: params/decoder"):
            ckpt.restore(abstract_state=fewer)


def test_config_fingerprint():
    fp = checkpoints.config_fingerprint(CONFIG)
    assert fp == checkpoints.config_fingerprint(dict(reversed(list(CONFIG.items()))))
    assert fp == checkpoints.config_fingerprint(dict(CONFIG, learning_rate=3.0, seed=4))  # not shape-relevant
    assert fp != checkpoints.config_fingerprint(dict(CONFIG, **{"model.d_model": 9}))
    assert len(fp) == 64


def test_sigterm_then_forced_async_save_and_restore(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    flag = checkpoints.install_preemption_handler()
    state = _state(step=0)
    try:
        with TrainCheckpointer(str(tmp_path), save_every=1000, async_save=True) as ckpt:
            step = 0
            for step in range(1, 50):  # a stand-in training loop
                state["step"] = jnp.asarray(step, jnp.int32)
                ckpt.save(step, state, _meta(position=step))
                if step == 3:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary
                if checkpoints.reached_preemption_sync_point(flag, step):
                    assert ckpt.save(step, state, _meta(position=step), force=True)
                    ckpt.wait()
                    break
            assert flag.requested and flag.signum == signal.SIGTERM and step == 3
            restored, meta = TrainCheckpointer(str(tmp_path)).restore(abstract_state=_abstract(state))
            assert meta["data_position"] == 3
            _assert_bitwise_equal(restored, state)
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before


def test_second_sigint_falls_through_to_previous_handler():
    before = signal.getsignal(signal.SIGINT)
    flag = checkpoints.install_preemption_handler(signals=(signal.SIGINT,))
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert flag.requested and flag.reached_preemption_sync_point(1)
        if before is signal.default_int_handler:  # a second Ctrl-C still interrupts
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGINT) == before
