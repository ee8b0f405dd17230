"""Train and eval steps, jitted with explicit shardings: state, microbatching, dropout keys, metrics."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prottrans_jax import partitioning

LogitsFn = Callable[[Any, Mapping[str, jax.Array], jax.Array, bool], Any]


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. ``rng`` is raw key data (uint32) so checkpoints hold plain arrays."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


@dataclasses.dataclass
class Trainer:
    """Builds the sharded initial state and the jitted train/eval steps for one model and objective.

    Attributes:
      module: the Linen network.
      logits_fn: ``logits_fn(params, batch, rng, train) -> logits`` (or what the objective expects).
      objective: an object with ``normalizers(batch)`` and ``loss(logits_fn, params, batch, rng, normalizers)``.
      optimizer: an optax transformation.
      mesh: device mesh.
      rules: logical axis rules (or their name in ``partitioning.RULES``).
      init_inputs: keyword inputs for ``module.init`` (shapes only matter).
      num_microbatches: gradient accumulation steps per global batch (1 = off).
      learning_rate_fn: the schedule, for logging.
    """

    module: Any
    logits_fn: LogitsFn
    objective: Any
    optimizer: optax.GradientTransformation
    mesh: Mesh
    rules: Any
    init_inputs: Mapping[str, Any]
    num_microbatches: int = 1
    learning_rate_fn: Callable | None = None

    def __post_init__(self):
        self.rules = partitioning.get_rules(self.rules)
        self.param_shardings = partitioning.params_shardings(self.module, self.mesh, self.rules, **self.init_inputs)
        self._init = None
        self._train_step = None
        self._eval_step = None

    # -- state ---------------------------------------------------------------------------
    def _init_fn(self, seed):
        key = jax.random.key(seed)
        params_key, state_key = jax.random.split(key)
        params = self.module.init(params_key, **self.init_inputs)["params"]
        params = jax.lax.with_sharding_constraint(params, self.param_shardings)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=self.optimizer.init(params),
            rng=jax.random.key_data(state_key),
        )

    def _compiled_init(self):
        """The init function compiled once; its output shardings are the state's shardings."""
        if self._init is None:
            with partitioning.mesh_context(self.mesh, self.rules):
                self._init = jax.jit(self._init_fn).lower(jnp.int32(0)).compile()
        return self._init

    @property
    def state_shardings(self) -> TrainState:
        """Shardings of every state leaf: params by logical axes, optimizer state as the compiler propagates."""
        return self._compiled_init().output_shardings

    def abstract_state(self) -> TrainState:
        """ShapeDtypeStructs with shardings: the restore target for checkpoints (nothing allocated)."""
        shapes = jax.eval_shape(self._init_fn, jnp.int32(0))
        return jax.tree_util.tree_map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_shardings
        )

    def init_state(self, seed: int = 0) -> TrainState:
        """Fresh parameters and optimizer state, created directly in their shardings."""
        return self._compiled_init()(jnp.int32(seed))

    def replace_params(self, state: TrainState, params: Any) -> TrainState:
        """State with given (e.g. imported) parameters placed on their shardings."""
        return state.replace(params=partitioning.shard_params(params, self.param_shardings))

    # -- steps ---------------------------------------------------------------------------
    def batch_sharding(self, ndim: int = 2) -> NamedSharding:
        return partitioning.batch_sharding(self.mesh, self.rules, ndim)

    def _grads(self, params, batch, rng):
        """Loss, metric sums and gradients of the global batch, accumulated over microbatches."""
        normalizers = self.objective.normalizers(batch)

        def loss_fn(p, micro, key):
            return self.objective.loss(lambda pp, b, k: self.logits_fn(pp, b, k, True), p, micro, key, normalizers)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        k = self.num_microbatches
        if k == 1:
            (loss, sums), grads = grad_fn(params, batch, rng)
            return loss, sums, grads
        # [batch, ...] -> [k, batch / k, ...]: microbatch i takes rows i, i + k, ... so that every
        # microbatch keeps an even share of each device's rows.
        micro = jax.tree_util.tree_map(lambda x: x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1), batch)

        def body(carry, xs):
            i, mb = xs
            (loss, sums), grads = grad_fn(params, mb, jax.random.fold_in(rng, i))
            acc_loss, acc_sums, acc_grads = carry
            return (acc_loss + loss, jax.tree_util.tree_map(jnp.add, acc_sums, sums),
                    jax.tree_util.tree_map(jnp.add, acc_grads, grads)), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        first_sums = jax.eval_shape(lambda: grad_fn(params, jax.tree_util.tree_map(lambda x: x[0], micro), rng)[0][1])
        zero_sums = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), first_sums)
        (loss, sums, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zero_sums, zeros), (jnp.arange(k), micro))
        return loss, sums, grads

    def _train_step_fn(self, state: TrainState, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)  # fresh dropout key per step
        loss, sums, grads = self._grads(state.params, batch, rng)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(sums, loss=loss, grad_norm=optax.global_norm(grads))
        if self.learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(self.learning_rate_fn(state.step), jnp.float32)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def train_step(self, state: TrainState, batch: Mapping[str, jax.Array]):
        """One optimizer step on a global batch (arrays sharded by :meth:`batch_sharding`)."""
        if self._train_step is None:
            batch_shardings = {k: self.batch_sharding(np.ndim(v)) for k, v in batch.items()}
            replicated = NamedSharding(self.mesh, PartitionSpec())
            self._train_step = jax.jit(
                self._train_step_fn,
                in_shardings=(self.state_shardings, batch_shardings),
                out_shardings=(self.state_shardings, replicated),
                donate_argnums=(0,),
            )
        with partitioning.mesh_context(self.mesh, self.rules):
            return self._train_step(state, batch)

    def _eval_step_fn(self, params, batch):
        normalizers = self.objective.normalizers(batch)
        rng = jax.random.key(0)
        loss, sums = self.objective.loss(lambda p, b, k: self.logits_fn(p, b, k, False), params, batch, rng, normalizers)
        return dict(sums, loss=loss)

    def eval_step(self, state: TrainState, batch: Mapping[str, jax.Array]):
        """Metric sums on a batch without dropout."""
        if self._eval_step is None:
            batch_shardings = {k: self.batch_sharding(np.ndim(v)) for k, v in batch.items()}
            self._eval_step = jax.jit(
                self._eval_step_fn, in_shardings=(self.param_shardings, batch_shardings),
                out_shardings=NamedSharding(self.mesh, PartitionSpec()),
            )
        with partitioning.mesh_context(self.mesh, self.rules):
            return self._eval_step(state.params, batch)

    def step_flops(self, state: TrainState, batch) -> float | None:
        """FLOPs per device of one compiled train step, from XLA's cost analysis (None when unavailable)."""
        try:
            with partitioning.mesh_context(self.mesh, self.rules):
                cost = jax.jit(self._train_step_fn).lower(state, batch).compile().cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            return float(cost.get("flops", 0.0)) or None
        except Exception:  # noqa: BLE001 - cost analysis is best-effort across backends
            return None
