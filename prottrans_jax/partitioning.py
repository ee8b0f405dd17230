"""Device meshes, logical axis rules and sharded init/apply for Linen modules annotated with logical axes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from flax.core import meta, unfreeze
from flax.linen import partitioning as nn_partitioning
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prottrans_jax.models.layers import with_logical_constraint  # noqa: F401  (re-exported)

# Mesh axes, outermost first: pure data parallelism, parameter sharding (FSDP/ZeRO-3), tensor parallelism.
MESH_AXES = ("data", "fsdp", "model")

# t5x's standard rules (1-D parameter and activation partitioning): batch over 'data', the wide
# dimensions of each matrix over 'model', 'embed' replicated.
MODEL_PARALLEL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("relpos_buckets", None),
    ("layers", None),
)
# Data parallelism only: every parameter replicated, the batch split over all devices.
DATA_PARALLEL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp", "model")),
    ("vocab", None),
    ("mlp", None),
    ("heads", None),
    ("joined_kv", None),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("relpos_buckets", None),
    ("layers", None),
)
# FSDP + tensor parallelism: batch over data*fsdp; parameters' 'embed' dimension over 'fsdp'
# (activations keep 'embed' whole because 'fsdp' is already taken by 'batch' there).
FSDP_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("embed", "fsdp"),
    ("length", None),
    ("relpos_buckets", None),
    ("layers", None),
)
RULES = {"data": DATA_PARALLEL_RULES, "model": MODEL_PARALLEL_RULES, "fsdp": FSDP_RULES}


def get_rules(name_or_rules: str | Sequence[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """Rules by name ('data', 'model', 'fsdp') or passed through when already a sequence of pairs."""
    if isinstance(name_or_rules, str):
        if name_or_rules not in RULES:
            raise ValueError(f"unknown logical axis rules {name_or_rules!r}; expected one of {sorted(RULES)}")
        return RULES[name_or_rules]
    return tuple((k, v) for k, v in name_or_rules)


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh with axes ``('data', 'fsdp', 'model')`` over ``devices`` (default ``jax.devices()``).

    Args:
      shape: sizes by axis name, e.g. ``{'data': 2, 'model': 4}``; absent axes have size 1 and one
        axis may be -1 (all remaining devices). Default: ``{'data': -1}``.
      devices: devices to use (default: all).

    Returns:
      A ``jax.sharding.Mesh`` with every axis of ``MESH_AXES``.

    Raises:
      ValueError: for unknown axis names or sizes that do not multiply to the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = dict(shape or {"data": -1})
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; use {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {shape}")
    if -1 in sizes:
        known = int(np.prod([s for s in sizes if s != -1]))
        if len(devices) % known:
            raise ValueError(f"mesh {shape}: {len(devices)} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices but {len(devices)} are "
            "available; make the axis sizes multiply to the device count"
        )
    grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules: Sequence[tuple[str, Any]]):
    """Activates ``mesh`` and logical axis ``rules`` (so in-model constraints take effect)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
        yield


def logical_axes(variables_or_axes: Mapping) -> Any:
    """Logical ``PartitionSpec`` tree of the params, from ``variables['params_axes']`` (or that collection)."""
    axes = variables_or_axes.get("params_axes", variables_or_axes)
    # Plain dicts, so the tree matches params trees from `init` (which are dicts in current flax).
    return unfreeze(nn_partitioning.get_axis_names(axes))


def logical_to_shardings(logical_specs: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
    """Tree of logical ``PartitionSpec`` -> tree of ``NamedSharding`` on ``mesh`` under ``rules``."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, tuple(rules))


def abstract_variables(module: nn.Module, *init_args, **init_kwargs) -> Any:
    """Shapes/dtypes of ``module.init`` outputs (including ``params_axes``) without allocating."""
    return jax.eval_shape(lambda rng: module.init(rng, *init_args, **init_kwargs), jax.random.key(0))


def params_shardings(module: nn.Module, mesh: Mesh, rules, *init_args, **init_kwargs) -> Any:
    """``NamedSharding`` tree matching ``module``'s params (default inputs: ``module.dummy_inputs()``)."""
    if not init_args and not init_kwargs:
        init_kwargs = module.dummy_inputs()
    abstract = abstract_variables(module, *init_args, **init_kwargs)
    shardings = logical_to_shardings(logical_axes(abstract), mesh, get_rules(rules))
    return jax.tree_util.tree_map(fit_to_shape, shardings, unbox(abstract["params"]))


def fit_to_shape(sharding: NamedSharding, shaped: Any) -> NamedSharding:
    """Replicates the dimensions whose size the assigned mesh axes do not divide.

    E.g. ProtBert's 30-token vocabulary cannot be split over a 4-way 'model' axis: that one
    dimension stays whole while the rest of the model is still sharded.
    """
    spec = list(sharding.spec) + [None] * (len(shaped.shape) - len(sharding.spec))
    for dim, axes in enumerate(spec):
        if axes is None:
            continue
        names = axes if isinstance(axes, tuple) else (axes,)
        ways = int(np.prod([sharding.mesh.shape[name] for name in names]))
        if shaped.shape[dim] % ways:
            spec[dim] = None
    return NamedSharding(sharding.mesh, PartitionSpec(*spec))


def init_sharded(module: nn.Module, rng: jax.Array, mesh: Mesh, rules, *init_args, **init_kwargs) -> Any:
    """Initializes ``module``'s params directly into their shardings (no full copy on one device).

    Returns:
      The ``params`` tree, each leaf a ``jax.Array`` with a ``NamedSharding`` on ``mesh``.
    """
    rules = get_rules(rules)
    if not init_args and not init_kwargs:
        init_kwargs = module.dummy_inputs()
    shardings = params_shardings(module, mesh, rules, *init_args, **init_kwargs)

    def init(key):
        return module.init(key, *init_args, **init_kwargs)["params"]

    with mesh_context(mesh, rules):
        return jax.jit(init, out_shardings=shardings)(rng)


def shard_params(params: Any, shardings: Any) -> Any:
    """Places an existing params tree (e.g. converted from HF) onto ``shardings``."""
    return jax.tree_util.tree_map(lambda x, s: jax.device_put(x, s), params, shardings)


def batch_sharding(mesh: Mesh, rules, ndim: int = 2) -> NamedSharding:
    """Sharding of a ``[batch, length, ...]`` input: 'batch' by the rules, the rest replicated."""
    spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), get_rules(rules))
    return NamedSharding(mesh, spec)


def sharded_apply(
    module: nn.Module,
    mesh: Mesh,
    rules,
    param_shardings: Any,
    method: Callable | str | None = None,
    static_kwargs: Mapping[str, Any] | None = None,
    out_shardings: Any = None,
) -> Callable:
    """Jits ``module.apply`` with parameter and batch shardings under the mesh and logical rules.

    Args:
      module: the Linen module.
      mesh: device mesh.
      rules: logical axis rules (or a name for :func:`get_rules`).
      param_shardings: ``NamedSharding`` tree for ``params`` (see :func:`params_shardings`).
      method: module method to apply (default ``__call__``).
      static_kwargs: python-valued keyword arguments bound at trace time (e.g. ``enable_dropout=False``).
      out_shardings: optional output shardings (default: left to the compiler and in-model constraints).

    Returns:
      ``fn(params, *arrays) -> outputs``; every array argument is sharded along its leading 'batch' axis.
    """
    rules = get_rules(rules)
    static_kwargs = dict(static_kwargs or {})

    def apply(params, *args):
        return module.apply({"params": params}, *args, method=method, **static_kwargs)

    compiled: dict[tuple[int, ...], Callable] = {}  # one jitted function per tuple of input ranks

    def run(params, *args):
        ranks = tuple(np.ndim(a) for a in args)
        if ranks not in compiled:
            in_shardings = (param_shardings,) + tuple(batch_sharding(mesh, rules, r) for r in ranks)
            kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}
            compiled[ranks] = jax.jit(apply, in_shardings=in_shardings, **kwargs)
        with mesh_context(mesh, rules):
            return compiled[ranks](params, *args)

    return run


def unbox(tree: Any) -> Any:
    """Strips flax ``Partitioned`` boxes (from ``nn.with_logical_partitioning`` params), if any."""
    return meta.unbox(tree)
