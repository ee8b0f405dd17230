"""Registers the family of pretraining tasks (ProtT5 denoising, span corruption, BERT MLM, ELECTRA, TXL causal LM, XLNet permutation LM) for one corpus."""

from __future__ import annotations

import functools
from typing import Optional

import seqio

from prottrans_jax import causal_lm_data, data_sources, permutation_lm_data, preprocessors, vocab, xlnet_vocab
from prottrans_jax.vocab import ProtBertVocabulary, ProtT5Vocabulary
from prottrans_jax_tasks.metrics import T5_METRICS

OBJECTIVES = ("prot_t5_denoise", "span_corruption", "bert_mlm", "electra", "txl_causal_lm", "xlnet_plm")


def t5_output_features() -> dict[str, seqio.Feature]:
    vocabulary = ProtT5Vocabulary()
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }


def mlm_output_features() -> dict[str, seqio.Feature]:
    vocabulary = ProtBertVocabulary()
    return {
        # [CLS] and [SEP] are added by the masked_lm preprocessor, not by seqio.
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=False, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=False),
        "loss_weights": seqio.Feature(
            vocabulary=seqio.PassThroughVocabulary(size=2), add_eos=False, required=False
        ),
    }


def causal_lm_output_features() -> dict[str, seqio.Feature]:
    """ProtTXL: ProtBert's vocabulary; [CLS]/[SEP] and the one-token shift come from the txl_causal_lm preprocessor."""
    vocabulary = vocab.get_vocabulary("prot_bert")
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=False),
    }


def permutation_lm_output_features() -> dict[str, seqio.Feature]:
    """ProtXLNet: its own vocabulary; <sep> <cls>, padding and the permutation come from the xlnet_plm preprocessor."""
    vocabulary = xlnet_vocab.get_xlnet_vocabulary()
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=False, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=False),
    }


def _output_features(objective: str) -> dict[str, seqio.Feature]:
    if objective in ("prot_t5_denoise", "span_corruption"):
        return t5_output_features()
    if objective == "txl_causal_lm":
        return causal_lm_output_features()
    if objective == "xlnet_plm":
        return permutation_lm_output_features()
    return mlm_output_features()


def _objective_preprocessors(objective: str, noise_density: float) -> list:
    """Preprocessors that run after tokenization (and after the cache placeholder)."""
    if objective == "prot_t5_denoise":
        return [functools.partial(preprocessors.prot_t5_denoise, noise_density=noise_density)]
    if objective == "span_corruption":
        return [
            functools.partial(preprocessors.span_corruption, noise_density=noise_density),
            seqio.preprocessors.append_eos_after_trim,
        ]
    if objective == "bert_mlm":
        return [functools.partial(preprocessors.masked_lm, noise_density=noise_density)]
    if objective == "electra":
        return [functools.partial(preprocessors.electra_inputs, noise_density=noise_density)]
    if objective == "txl_causal_lm":
        return [causal_lm_data.txl_causal_lm]
    if objective == "xlnet_plm":
        return [permutation_lm_data.permutation_lm]
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def task_name(prefix: str, objective: str) -> str:
    return f"{prefix}_{objective}"


def register_objective_tasks(
    prefix: str,
    source: seqio.DataSource,
    objectives=OBJECTIVES,
    noise_density: float = 0.15,
) -> list[str]:
    """Registers ``{prefix}_{objective}`` for each objective over one data source; returns the names.

    Re-registering a name replaces the earlier task (so a notebook can point a prefix elsewhere).
    """
    names = []
    for objective in objectives:
        is_t5 = objective in ("prot_t5_denoise", "span_corruption")
        name = task_name(prefix, objective)
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name,
            source=source,
            preprocessors=[
                preprocessors.tokenize,
                seqio.CacheDatasetPlaceholder(),
                *_objective_preprocessors(objective, noise_density),
            ],
            output_features=_output_features(objective),
            # t5x.eval needs a metric; encoder-only (MLM, ELECTRA) tasks are not decoded.
            metric_fns=list(T5_METRICS) if is_t5 else [],
        )
        names.append(name)
    return names


def register_fasta_tasks(
    prefix: str,
    fasta_paths: data_sources.PathsOrFn,
    validation_fraction: float = 0.005,
    max_length: Optional[int] = None,
    objectives=OBJECTIVES,
    noise_density: float = 0.15,
) -> list[str]:
    """Registers the whole objective family for a FASTA glob (or list, or zero-argument callable).

    Example::

        register_fasta_tasks("my_corpus", "/data/my_proteins_*.fasta.gz")
        # -> my_corpus_prot_t5_denoise, my_corpus_span_corruption, my_corpus_bert_mlm, my_corpus_electra
    """
    source = data_sources.FastaDataSource(fasta_paths, validation_fraction=validation_fraction, max_length=max_length)
    return register_objective_tasks(prefix, source, objectives, noise_density)


def register_tfrecord_tasks(
    prefix: str, split_to_pattern: dict[str, str], objectives=OBJECTIVES, noise_density: float = 0.15
) -> list[str]:
    """Registers the objective family over TFRecord shards from ``data_sources.fasta_to_tfrecords``."""
    return register_objective_tasks(prefix, data_sources.tfrecord_source(split_to_pattern), objectives, noise_density)
