"""``prottrans-jax score``: each protein's log-likelihood under any family, as a TSV table.

Methods (column ``method``):

* ``causal`` (ProtTXL): ``sum log p(token | tokens before)`` over the residues and ``[SEP]``, after ``[CLS]``;
  proteins longer than a segment are read in segments with Transformer-XL's memory.
* ``permutation`` (ProtXLNet): the same sum in the left-to-right factorisation order (``perm_mask``), after
  the context ``<sep> <cls>``, over the residues and the closing ``<sep>``: an exact likelihood.
* ``mlm_pseudo`` (ProtBert, ProtAlbert, ProtElectra's generator): ``sum_i log p(x_i | x with x_i masked)``.
* ``t5_denoising`` (ProtT5): ``sum_i log p(x_i | x with x_i a sentinel)`` from the teacher-forced decoder.

The last two are pseudo-log-likelihoods: comparable between proteins under one model, not with the
first two. ``mean_log_likelihood`` divides by ``scored_tokens`` (residues, plus the end token for the
autoregressive methods) and ``perplexity`` is ``exp(-mean_log_likelihood)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from prottrans_jax import atomic_files, fasta
from prottrans_jax.generation import lm as lm_module
from prottrans_jax.generation.causal import CausalScorer
from prottrans_jax.generation.masked import MaskedLMScorer
from prottrans_jax.generation.permutation import PermutationScorer
from prottrans_jax.generation.t5_decoding import T5DenoisingScorer

COLUMNS = ("id", "length", "log_likelihood", "mean_log_likelihood", "perplexity", "scored_tokens", "method")
AUTOREGRESSIVE = ("causal", "permutation")


@dataclasses.dataclass(frozen=True)
class Score:
    """One protein's row of the table (see the module docstring for the columns)."""

    id: str
    length: int
    log_likelihood: float
    scored_tokens: int
    method: str

    @property
    def mean_log_likelihood(self) -> float:
        return self.log_likelihood / self.scored_tokens

    @property
    def perplexity(self) -> float:
        return math.exp(-self.mean_log_likelihood)

    def tsv_line(self) -> str:
        return "\t".join([self.id, str(self.length), f"{self.log_likelihood:.6f}", f"{self.mean_log_likelihood:.6f}",
                          f"{self.perplexity:.6f}", str(self.scored_tokens), self.method])


def make_scorer(lm: lm_module.LanguageModel, segment_length: Optional[int] = None):
    """The scorer of ``lm``'s method: called as ``scorer(params, residue_ids, rows[, on_rows])``."""
    if lm.method == "causal":
        return CausalScorer(lm.module, lm.framing, segment_length)
    if lm.method == "permutation":
        return PermutationScorer(lm.module, lm.framing)
    if lm.method == "t5_denoising":
        return T5DenoisingScorer(lm.module, lm.framing)
    method = type(lm.module).generator_logits if lm.architecture == "ElectraPretrainingModel" else None
    return MaskedLMScorer(lm.module, lm.framing, method)


def score_sequences(lm: lm_module.LanguageModel, sequences: list[str], *, batch_size: int = 8,
                    segment_length: Optional[int] = None, progress=None) -> np.ndarray:
    """``[len(sequences)]`` log-likelihoods (normalised residue strings) under ``lm``'s method.

    Args:
      lm: the model.
      sequences: residues, normalised (``alphabet.normalize_sequence``).
      batch_size: proteins per forward pass (autoregressive) or masked copies per pass (pseudo-likelihoods).
      segment_length: Transformer-XL only: tokens per segment (default: the model's ``mem_len``).
      progress: called with the number of proteins (autoregressive) or masked copies finished.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be >= 1")
    if segment_length is not None and segment_length < 1:
        raise ValueError(f"--segment-length {segment_length}: must be >= 1")
    ids = [lm.framing.encode(s, f"sequence {i}") for i, s in enumerate(sequences)]
    scorer = make_scorer(lm, segment_length)
    if lm.method not in AUTOREGRESSIVE:
        return scorer(lm.params, ids, batch_size, progress)
    order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths share a padded shape
    out = np.zeros(len(ids))
    for s in range(0, len(order), batch_size):
        chosen = order[s:s + batch_size]
        out[chosen] = scorer(lm.params, [ids[i] for i in chosen], batch_size)
        if progress is not None:
            progress(len(chosen))
    return out


def score_fasta(model: str, fasta_path: str, out: str, *, batch_size: int = 8, segment_length: Optional[int] = None,
                step: Optional[int] = None, overwrite: bool = False, progress: bool = True) -> list[Score]:
    """Scores every protein of ``fasta_path`` and writes the TSV ``out`` (whole or not at all).

    Raises:
      FileExistsError: ``out`` exists and ``overwrite`` is False (checked before anything is read).
      fasta.FastaError: a malformed FASTA input (one line naming file, line and record).
    """
    from tqdm.auto import tqdm

    atomic_files.refuse_existing(out, overwrite, "score table")
    records = list(fasta.validated_records(fasta_path))
    lm = lm_module.load_language_model(model, step)
    pseudo = lm.method not in AUTOREGRESSIVE
    total = sum(len(r.sequence) for r in records) if pseudo else len(records)
    with tqdm(total=total, unit="row" if pseudo else "seq", desc="scoring", disable=not progress) as bar:
        lls = score_sequences(lm, [r.sequence for r in records], batch_size=batch_size,
                              segment_length=segment_length, progress=bar.update)
    extra = 0 if pseudo else 1
    scores = [Score(r.id, len(r.sequence), float(ll), len(r.sequence) + extra, lm.method)
              for r, ll in zip(records, lls)]
    with atomic_files.atomic_file(out) as tmp:
        tmp.write_text("\t".join(COLUMNS) + "\n" + "".join(s.tsv_line() + "\n" for s in scores))
    return scores
