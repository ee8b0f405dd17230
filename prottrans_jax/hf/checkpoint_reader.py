"""Reading one Orbax checkpoint (ours or t5x's) without the trainer's manager: what export, embedding,
import and the downstream heads need. The trainer's own manager (saving, resuming, preemption) is
``prottrans_jax.checkpoints``.
"""

from __future__ import annotations

import json
import re

import jax
import orbax.checkpoint as ocp
from etils import epath

STEP_PREFIX = "checkpoint"  # t5x's directory names: MODEL_DIR/checkpoint_<step>/
STATE_ITEM = "state"  # Orbax PyTree item, as in t5x
META_ITEM = "meta"  # JSON item: fingerprint, config, data position, versions
COMMIT_FILE = "commit_success.txt"  # written by Orbax just before a checkpoint is finalised
STEP_DIR_RE = re.compile(rf"^{STEP_PREFIX}_(\d+)$")  # checkpoint_<step>


class IncompatibleCheckpointError(ValueError):
    """A checkpoint was written for a different model/optimizer than the one restoring it."""


def finished_step_dirs(model_dir: str) -> dict[int, epath.Path]:
    """``{step: MODEL_DIR/checkpoint_<step>}`` for every finished checkpoint (ours or t5x's Orbax ones).

    A directory counts when it has a ``state`` item and Orbax's commit marker (``commit_success.txt``
    or, for writers that rename atomically, ``_CHECKPOINT_METADATA``); temporary directories never do.
    """
    root = epath.Path(model_dir)
    out = {}
    if not root.is_dir():
        return out
    for child in root.iterdir():
        match = STEP_DIR_RE.match(child.name)
        if match and (child / STATE_ITEM).is_dir() and (
                (child / COMMIT_FILE).exists() or (child / "_CHECKPOINT_METADATA").exists()):
            out[int(match.group(1))] = child
    return dict(sorted(out.items()))


def read_meta(step_dir: str) -> dict:
    """The JSON ``meta`` item of one of our checkpoints; ``{}`` for checkpoints without one (t5x)."""
    path = epath.Path(step_dir) / META_ITEM / "metadata"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise IncompatibleCheckpointError(f"{path}: checkpoint metadata is not valid JSON ({e})") from None


def state_keys(step_dir: str) -> list[str]:
    """Top-level keys of a checkpoint's ``state`` PyTree (ours: params, opt_state, ...; t5x: target, state)."""
    return list(_state_metadata(epath.Path(step_dir) / STATE_ITEM).keys())


def _state_metadata(path: epath.Path):
    """The tree of array metadata of a ``state`` item (a handler's own call: no step-metadata warning)."""
    return ocp.PyTreeCheckpointHandler().metadata(path).tree


def restore_subtree_numpy(step_dir: str, key: str) -> dict:
    """Reads one top-level subtree of ``state`` (e.g. the parameters) into host numpy, nothing else.

    Raises:
      IncompatibleCheckpointError: the state has no such subtree.
    """
    import numpy as np

    path = epath.Path(step_dir) / STATE_ITEM
    tree = _state_metadata(path)
    if key not in tree:
        raise IncompatibleCheckpointError(f"{path}: no {key!r} in the checkpoint state (it has {sorted(tree)})")
    item = {key: jax.tree_util.tree_map(lambda _: np.zeros((), np.float32), tree[key])}
    restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    with ocp.PyTreeCheckpointer() as ckpt:
        out = ckpt.restore(path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                             partial_restore=True))
    return out[key]
