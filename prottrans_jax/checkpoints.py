"""Training checkpoints on Orbax: t5x-style ``checkpoint_<step>`` directories, resume checks, preemption."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import signal
import threading
from typing import Any, Iterable, Mapping, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

# Reading one checkpoint lives with export and embedding (hf/checkpoint_reader.py); this is the trainer's manager.
from prottrans_jax.hf.checkpoint_reader import (COMMIT_FILE, META_ITEM, STATE_ITEM, STEP_PREFIX,
                                                IncompatibleCheckpointError)

log = logging.getLogger(__name__)

# Config keys (last dotted component) that never change a parameter or optimizer-state shape.
RUN_ONLY_FIELDS = frozenset({
    "dtype", "dropout_rate", "attention_dropout_rate", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "remat", "remat_policy", "learning_rate", "warmup_steps", "train_steps", "batch_size", "seed", "model_dir",
    "log_every", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints", "async_checkpoints",
})


def _shape_fields(config: Mapping[str, Any], fields: Optional[Iterable[str]] = None) -> dict:
    if fields is not None:
        return {k: config.get(k) for k in fields}
    return {k: v for k, v in config.items() if str(k).rsplit(".", 1)[-1] not in RUN_ONLY_FIELDS}


def config_fingerprint(config: Mapping[str, Any], fields: Optional[Iterable[str]] = None) -> str:
    """SHA-256 of the config fields that fix parameter and optimizer-state shapes.

    Args:
      config: a flat, JSON-serialisable dict of the run's settings.
      fields: the keys to hash; by default every key whose last dotted component is not in
        ``RUN_ONLY_FIELDS`` (learning rate, dropout, batch size, paths... do not change shapes).

    Returns:
      A hex digest, stable across key order and processes.
    """
    canonical = json.dumps(_shape_fields(config, fields), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _path_str(path) -> str:
    """Key path -> ``params/encoder/layers_0/kernel`` (dict keys, attribute names and indices alike)."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree):
    """Typed PRNG keys -> uint32 key data (Orbax stores plain arrays); returns (tree, {path: impl})."""
    impls = {}

    def convert(path, x):
        if not _is_key(x):
            return x
        impls[_path_str(path)] = str(jax.random.key_impl(x))
        return jax.random.key_data(x)

    return jax.tree_util.tree_map_with_path(convert, tree), impls


def _abstract_keys_to_data(tree):
    """Abstract typed keys -> abstract uint32 key data on the same devices."""

    def convert(x):
        if not _is_key(x):
            return x
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
        # The same sharding fits: key data only adds trailing dims, which a PartitionSpec leaves unsharded.
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree_util.tree_map(convert, tree)


def _shape_mismatches(saved_tree, expected_tree) -> list[str]:
    """Human-readable differences in paths and shapes between saved metadata and the expected tree."""
    def shapes(tree):
        return {_path_str(p): tuple(getattr(x, "shape", ())) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

    saved, want = shapes(saved_tree), shapes(expected_tree)
    problems = [f"{k}: saved shape {saved[k]} vs expected {want[k]}"
                for k in sorted(saved.keys() & want.keys()) if saved[k] != want[k]]
    for label, names in (("missing from the checkpoint", sorted(want.keys() - saved.keys())),
                         ("in the checkpoint but not expected", sorted(saved.keys() - want.keys()))):
        if names:
            more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
            problems.append(f"{label}: {', '.join(names[:5])}{more}")
    return problems


class TrainCheckpointer:
    """Periodic, atomic, optionally asynchronous training checkpoints under ``model_dir``.

    Layout: ``model_dir/checkpoint_<step>/{state,meta}``; ``state`` holds the train-state PyTree
    (params, opt_state, step, rng key data), ``meta`` a JSON dict (config fingerprint, config, model,
    data position, creation time, versions). A step counts only once Orbax has finalised it
    (temporary directory renamed and ``commit_success.txt`` written); anything else is ignored.
    """

    def __init__(self, model_dir: str, keep: int = 3, save_every: int = 1000, async_save: bool = True):
        """Opens (creating if needed) ``model_dir``; removes temporary directories of interrupted saves.

        Args:
          model_dir: the run's directory (local path or any ``etils.epath`` URL such as gs://).
          keep: how many of the latest checkpoints to keep (older ones are deleted).
          save_every: ``save`` writes only on multiples of this step unless forced.
          async_save: write in a background thread after copying arrays to host memory.
        """
        if save_every < 1 or keep < 1:
            raise ValueError(f"save_every and keep must be >= 1, got save_every={save_every}, keep={keep}")
        self.directory = epath.Path(model_dir)
        self.save_every = save_every
        # Writes use Orbax's default protocol (tmp dir + rename on POSIX, both of which write the
        # commit file); reads additionally demand the commit file, so a directory that merely has the
        # right name (a partial copy, a non-atomic rename on a FUSE mount) is never taken as good.
        read_format = ocp.step.standard_name_format(
            step_prefix=STEP_PREFIX,
            atomicity_options=ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.COMMIT_FILE),
        )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every, step_prefix=STEP_PREFIX,
            step_name_format=read_format, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True, create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler(), META_ITEM: ocp.JsonCheckpointHandler()},
        )

    def step_dir(self, step: int) -> epath.Path:
        """The directory of ``step``'s checkpoint (whether or not it exists)."""
        return self.directory / f"{STEP_PREFIX}_{int(step)}"

    def save(self, step: int, state_pytree: Any, meta: Mapping[str, Any], force: bool = False) -> bool:
        """Saves ``state_pytree`` and ``meta`` at ``step`` if it is a multiple of ``save_every`` or forced.

        Args:
          step: the training step (batches consumed so far, normally).
          state_pytree: arrays (possibly sharded) and typed PRNG keys; keys are stored as key data.
          meta: JSON-serialisable run facts; ``config_fingerprint`` is computed from ``config`` if absent.
          force: save regardless of ``save_every`` (end of training, preemption).

        Returns:
          Whether a save was started (False when skipped or when ``step`` is already saved).
        """
        step = int(step)
        if (not force and step % self.save_every) or step in self._manager.all_steps():
            return False
        self._set_aside_unfinished(step)
        data, key_impls = _keys_to_data(state_pytree)
        full_meta = dict(meta)
        if "config" in full_meta:
            full_meta.setdefault("config_fingerprint", config_fingerprint(full_meta["config"]))
        full_meta.update(
            step=step, prng_keys=key_impls, jax_version=jax.__version__,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        try:
            json.dumps(full_meta)
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint meta for {self.step_dir(step)} is not JSON-serialisable: {e}") from None
        args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(data), META_ITEM: ocp.args.JsonSave(full_meta)})
        return self._manager.save(step, args=args, force=True)

    def _set_aside_unfinished(self, step: int) -> None:
        """Renames a non-finalised ``checkpoint_<step>`` left by another writer, so the save can land."""
        path = self.step_dir(step)
        if jax.process_index() == 0 and path.exists() and not (path / COMMIT_FILE).exists():
            stamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
            aside = path.parent / f"{path.name}.unfinished-{stamp}"
            log.warning("%s has no %s (an interrupted write); moving it to %s", path, COMMIT_FILE, aside)
            path.rename(aside)

    def wait(self) -> None:
        """Blocks until any asynchronous save has been finalised on disk."""
        self._manager.wait_until_finished()

    def all_steps(self) -> list[int]:
        """Finalised steps on disk, ascending (waits for an in-flight save first)."""
        self.wait()
        self._manager.reload()
        return list(self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        """The newest finalised step on disk, or None (waits for an in-flight save first)."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def restore(self, step: Optional[int] = None, abstract_state: Any = None,
                expected_fingerprint: Optional[str] = None,
                expected_config: Optional[Mapping[str, Any]] = None) -> tuple[Any, dict]:
        """Restores a checkpoint after checking it fits this run.

        Args:
          step: the step to restore; the latest finalised one if None.
          abstract_state: the state's structure as ``jax.ShapeDtypeStruct``s with ``.sharding``; arrays
            are read directly into those shardings. If None, the tree comes back as saved (plain dicts).
          expected_fingerprint: ``config_fingerprint`` of this run; defaults to that of ``expected_config``.
          expected_config: this run's config dict, used to name the fields that differ.

        Returns:
          ``(state, meta)``.

        Raises:
          FileNotFoundError: no finalised checkpoint (at ``step``) in the directory.
          IncompatibleCheckpointError: fingerprint, structure or a shape differs; the message names the
            checkpoint directory and what differs.
        """
        steps = self.all_steps()
        if step is None and not steps:
            raise FileNotFoundError(f"no finished checkpoint in {self.directory} (expected {STEP_PREFIX}_<step>/"
                                    f" containing {COMMIT_FILE})")
        step = steps[-1] if step is None else int(step)
        where = self.step_dir(step)
        if step not in steps:
            raise FileNotFoundError(f"no finished checkpoint {where}; finished steps there: {steps or 'none'}")
        meta_args = ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()})
        meta = dict(self._manager.restore(step, args=meta_args)[META_ITEM])
        if expected_fingerprint is None and expected_config is not None:
            expected_fingerprint = config_fingerprint(expected_config)
        saved_fp = meta.get("config_fingerprint")
        if expected_fingerprint is not None and saved_fp != expected_fingerprint:
            raise IncompatibleCheckpointError(
                f"checkpoint {where} was written for another model/optimizer config (fingerprint "
                f"{str(saved_fp)[:12]} saved vs {expected_fingerprint[:12]} expected): "
                f"{_config_diff(meta.get('config'), expected_config)}. Restore with the config that wrote it, "
                f"or point the run at a fresh model directory.")
        if abstract_state is None:
            target = ocp.args.StandardRestore()
        else:
            abstract_data = _abstract_keys_to_data(abstract_state)
            saved_tree = self._manager.item_metadata(step)[STATE_ITEM]
            problems = _shape_mismatches(saved_tree, abstract_data)
            if problems:
                raise IncompatibleCheckpointError(
                    f"checkpoint {where} does not fit the state this run builds: {'; '.join(problems)}")
            target = ocp.args.StandardRestore(abstract_data)
        state = self._manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: target}))[STATE_ITEM]
        impls = meta.get("prng_keys") or {}
        state = jax.tree_util.tree_map_with_path(
            lambda p, x: jax.random.wrap_key_data(x, impl=impls[_path_str(p)]) if _path_str(p) in impls else x,
            state)
        return state, meta

    def close(self) -> None:
        """Finishes pending saves and releases Orbax's threads."""
        self._manager.close()

    def __enter__(self) -> "TrainCheckpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _config_diff(saved: Optional[Mapping[str, Any]], expected: Optional[Mapping[str, Any]]) -> str:
    """``field: saved vs now`` for each shape-relevant field that differs."""
    if not isinstance(saved, Mapping) or expected is None:
        return "pass expected_config (and save meta['config']) to see which fields differ"
    old, new = _shape_fields(saved), _shape_fields(expected)
    show = lambda d, k: repr(d[k]) if k in d else "<absent>"  # noqa: E731
    diffs = [f"{k}: {show(old, k)} saved vs {show(new, k)} now"
             for k in sorted(old.keys() | new.keys(), key=str) if old.get(k, ...) != new.get(k, ...)]
    return "fields differ: " + "; ".join(diffs) if diffs else "same fields, different fingerprint function"


class PreemptionFlag:
    """Set by SIGTERM/SIGINT; the training loop polls ``requested`` each step, saves and exits."""

    def __init__(self):
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self.signum: Optional[int] = None

    @property
    def requested(self) -> bool:
        """Whether a stop has been requested (by a signal or ``request()``)."""
        return self._event.is_set()

    def request(self, signum: Optional[int] = None) -> None:
        """Requests a stop (what the signal handler does)."""
        self.signum = signum
        self._event.set()

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal goes to the previous handler: a 2nd Ctrl-C still interrupts
            self.uninstall()
            signal.raise_signal(signum)
            return
        log.warning("received %s: will save a checkpoint and stop", signal.Signals(signum).name)
        self.request(signum)

    def uninstall(self) -> None:
        """Restores the handlers that were in place before ``install_preemption_handler``."""
        while self._previous:
            s, handler = self._previous.popitem()
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def reached_preemption_sync_point(self, step: int) -> bool:
        """Whether to save and stop at ``step``; all hosts agree on it when there are several."""
        return reached_preemption_sync_point(self, step)


def install_preemption_handler(signals: Optional[Iterable[int]] = None) -> PreemptionFlag:
    """Catches SIGTERM and SIGINT into a ``PreemptionFlag`` (call ``uninstall()`` when done).

    On several processes SIGTERM is left to JAX's preemption service (started by
    ``jax.distributed.initialize``), which ``reached_preemption_sync_point`` consults.

    Args:
      signals: the signals to catch; default SIGTERM and SIGINT (only SIGINT on several processes).

    Returns:
      The installed flag.
    """
    if signals is None:
        signals = (signal.SIGINT,) if jax.process_count() > 1 else (signal.SIGTERM, signal.SIGINT)
    flag = PreemptionFlag()
    for s in signals:  # signal.signal works in the main thread only
        flag._previous[s] = signal.signal(s, flag._handle)
    return flag


def reached_preemption_sync_point(flag: PreemptionFlag, step: int) -> bool:
    """True when the loop should save at ``step`` and stop.

    On one process this is ``flag.requested``. On several, every host must save the same step, so the
    answer comes from ``jax.experimental.multihost_utils.reached_preemption_sync_point`` (the local
    flag alone could make one host wait forever for the others at Orbax's save barrier).
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.reached_preemption_sync_point(int(step))
    return flag.requested
