"""Batched model-ready datasets from registered SeqIO tasks (task -> feature converter -> batches), and a preview."""

from __future__ import annotations

import re
from typing import Iterator, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

import prottrans_jax_tasks  # noqa: F401  (registers the tasks)
from prottrans_jax import alphabet, feature_converters, permutation_lm_data, preprocessors
from prottrans_jax_tasks import OBJECTIVES


def objective_of(task_name: str) -> str:
    """The objective a task trains (``uniref50_bert_mlm`` -> ``bert_mlm``)."""
    for objective in OBJECTIVES:
        if task_name.endswith(objective):
            return objective
    raise ValueError(f"cannot tell the objective of task {task_name!r}: its name should end with one of {OBJECTIVES}")


def check_task(task_name: str) -> str:
    """Returns the task's objective.

    Raises:
      ValueError: for a task that is not registered, naming the registered ones.
    """
    if task_name not in seqio.TaskRegistry.names():
        known = ", ".join(sorted(seqio.TaskRegistry.names()))
        raise ValueError(f"unknown task {task_name!r}; registered tasks: {known}")
    return objective_of(task_name)


def default_feature_lengths(objective: str, length: int) -> dict[str, int]:
    """Task feature lengths for an objective at sequence length ``length`` (ProtT5 used 512)."""
    if objective == "span_corruption":
        _, targets_length = preprocessors.span_corruption_lengths(length)
        return {"inputs": length, "targets": targets_length}
    if objective in ("bert_mlm", "electra"):
        return {"inputs": length, "targets": length, "loss_weights": length}
    if objective == "xlnet_plm":
        return permutation_lm_data.feature_lengths(length)
    return {"inputs": length, "targets": length}


def get_dataset(
    task_name: str,
    length: int = 512,
    batch_size: int = 8,
    split: str = "train",
    seed: Optional[int] = 0,
    shuffle: bool = True,
    pack: bool = False,
    num_epochs: Optional[int] = None,
    shard_info: Optional[seqio.ShardInfo] = None,
    feature_lengths: Optional[Mapping[str, int]] = None,
) -> tf.data.Dataset:
    """Batches of model features (e.g. ``encoder_input_tokens`` [batch, length]) for a registered task.

    Raises:
      ValueError: for an unknown task, naming the registered ones.
    """
    objective = check_task(task_name)
    ds = seqio.get_dataset(
        task_name,
        task_feature_lengths=dict(feature_lengths or default_feature_lengths(objective, length)),
        dataset_split=split,
        shuffle=shuffle,
        num_epochs=num_epochs,
        seed=seed,
        shard_info=shard_info,
        use_cached=False,
        feature_converter=feature_converters.get_feature_converter(objective, pack=pack),
    )
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_pipeline_options())


def _pipeline_options() -> tf.data.Options:
    """Fuses seqio's chain of per-example maps into one function per element (the main cost here)."""
    options = tf.data.Options()
    options.experimental_optimization.map_fusion = True
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.parallel_batch = True
    return options


class DataPipelineError(ValueError):
    """A user-fixable input problem (bad FASTA, invalid residue) raised from inside tf.data."""


_USER_ERROR = re.compile(r"\b(?:FastaError|InvalidResidueError): ([^\n]*)")


def numpy_batches(ds: tf.data.Dataset) -> Iterator[dict]:
    """Iterates a dataset as numpy, re-raising input errors from inside tf.data as one clear message.

    Raises:
      DataPipelineError: with the FASTA reader's message (file, line, record, fix) and no
        TensorFlow traceback.
    """
    it = ds.as_numpy_iterator()
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            match = _USER_ERROR.search(e.message)
            if match is None:
                raise
            raise DataPipelineError(match.group(1)) from None
        yield batch


def _renderer(objective: str):
    """id -> short display token for one vocabulary."""
    if objective in ("bert_mlm", "electra", "txl_causal_lm"):
        tokens = alphabet.prot_bert_tokens()
        names = {0: "", alphabet.PROT_BERT_MASK_ID: "_", alphabet.PROT_BERT_CLS_ID: "^", alphabet.PROT_BERT_SEP_ID: "$"}
    else:
        tokens = alphabet.prot_t5_id_to_token()
        names = {0: "", alphabet.PROT_T5_EOS_ID: "$"}
        names.update({alphabet.prot_t5_sentinel_id(i): f"<{i}>" for i in range(alphabet.PROT_T5_NUM_SENTINELS)})
    return lambda ids: "".join(names.get(int(i), tokens[int(i)]) for i in ids)


def preview_lines(task_name: str, num: int = 3, length: int = 64, seed: int = 0, split: str = "train") -> Iterator[str]:
    """Human-readable lines for the first ``num`` examples (``$`` eos/[SEP], ``^`` [CLS], ``_`` [MASK], ``<k>`` sentinel k)."""
    objective = objective_of(task_name)
    render = _renderer(objective)
    ds = get_dataset(task_name, length=length, batch_size=1, split=split, seed=seed, num_epochs=1)
    for i, batch in enumerate(numpy_batches(ds.take(num))):
        ex = {k: np.asarray(v[0]) for k, v in batch.items()}
        if "perm_mask" in ex:  # XLNet's permutation LM
            yield from permutation_lm_data.preview(i, ex)
            continue
        if "decoder_target_tokens" in ex:  # encoder-decoder, or the causal LM's decoder inputs
            yield f"[{i}] inputs : {render(ex.get('encoder_input_tokens', ex.get('decoder_input_tokens')))}"
            yield f"[{i}] targets: {render(ex['decoder_target_tokens'])}"
        else:
            yield f"[{i}] inputs : {render(ex['encoder_input_tokens'])}"
            yield f"[{i}] targets: {render(ex['encoder_target_tokens'])}"
            yield f"[{i}] weights: {''.join('1' if w else '.' for w in ex['encoder_loss_weights'][ex['encoder_target_tokens'] > 0])}"
