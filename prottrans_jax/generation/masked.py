"""Pseudo-log-likelihood: each residue hidden in turn and scored from the rest (BERT, ALBERT, ELECTRA's generator).

The pseudo-log-likelihood of a protein is ``sum_i log p(x_i | x without x_i)``: one masked copy of the
protein per residue (Salazar et al. 2020's PLL), many copies per forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prottrans_jax.generation.tokens import Framing, padded_length

Array = jax.Array


class PseudoLikelihoodScorer:
    """Scores ``(protein, residue)`` rows in calls of ``rows`` rows; subclasses build rows and run the model."""

    def __init__(self, module, frame: Framing, method=None):
        self.module, self.frame, self.method = module, frame, method
        self._jit = jax.jit(self.row_log_probs)

    def row_log_probs(self, params, *arrays) -> Array:
        """``[rows]`` log-probability of each row's hidden residue."""
        raise NotImplementedError

    def rows(self, residue_ids: list[np.ndarray], pairs: list[tuple[int, int]], rows: int) -> tuple:
        """The arrays :meth:`row_log_probs` takes for ``pairs`` of (protein index, residue position)."""
        raise NotImplementedError

    def __call__(self, params, residue_ids: list[np.ndarray], rows: int, on_rows=None) -> np.ndarray:
        """``[len(residue_ids)]`` pseudo-log-likelihoods; ``on_rows(n)`` reports progress."""
        pairs = [(p, i) for p, ids in enumerate(residue_ids) for i in range(len(ids))]
        total = np.zeros(len(residue_ids))
        for s in range(0, len(pairs), rows):
            chunk = pairs[s:s + rows]
            log_probs = np.asarray(self._jit(params, *self.rows(residue_ids, chunk, rows)))[:len(chunk)]
            np.add.at(total, [p for p, _ in chunk], log_probs)
            if on_rows is not None:
                on_rows(len(chunk))
        return total


class MaskedLMScorer(PseudoLikelihoodScorer):
    """``[CLS] residues [SEP]`` with one residue replaced by ``[MASK]``; its log-probability under the MLM head."""

    def row_log_probs(self, params, tokens: Array, positions: Array) -> Array:
        """``tokens [rows, T]``, ``positions [rows]`` (of the masked residue) -> ``[rows]``."""
        mask = (tokens != self.frame.pad_id).astype(jnp.int32)
        hidden = jnp.where(jnp.arange(tokens.shape[1])[None] == positions[:, None], self.frame.mask_id, tokens)
        kwargs = {"method": self.method} if self.method is not None else {}
        logits = self.module.apply({"params": params}, hidden, mask, **kwargs)  # [rows, T, vocab]
        at = jnp.take_along_axis(logits, positions[:, None, None], axis=1)[:, 0]  # [rows, vocab]
        truth = jnp.take_along_axis(tokens, positions[:, None], axis=1)[:, 0]
        return jnp.take_along_axis(jax.nn.log_softmax(at, axis=-1), truth[:, None], axis=-1)[:, 0]

    def rows(self, residue_ids, pairs, rows):
        context = len(self.frame.context)
        width = padded_length(max(len(residue_ids[p]) for p, _ in pairs) + context + 1)
        tokens = self.frame.framed([residue_ids[p] for p, _ in pairs], width, rows)
        positions = np.zeros(rows, np.int32)
        positions[:len(pairs)] = [context + i for _, i in pairs]
        return tokens, positions
