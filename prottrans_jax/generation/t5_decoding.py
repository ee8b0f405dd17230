"""ProtT5: sampling from the decoder with T5's ``decode=True`` cache, and denoising pseudo-log-likelihoods.

ProtT5 was pretrained to rewrite a protein whose masked residues each became one sentinel
(``<extra_id_0>``) into the whole original protein. Both commands ask it that question:

* generate: the encoder reads the prompt followed by one sentinel for every residue still to come (up to
  ``--max-length``) and ``</s>``: "a protein of this length starting with the prompt, the rest unknown".
  The decoder is forced through the prompt and then samples; its cache holds every earlier position.
* score: each residue in turn is replaced by ``<extra_id_0>`` in the encoder input and the decoder,
  teacher-forced on the true protein, is scored on that residue; the sum over residues is the denoising
  pseudo-log-likelihood.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prottrans_jax.generation.masked import PseudoLikelihoodScorer
from prottrans_jax.generation.tokens import Framing, padded_length
from prottrans_jax.models.t5 import T5EncoderDecoder

Array = jax.Array


def generation_encoder_input(frame: Framing, prompt_ids: np.ndarray, max_length: int) -> np.ndarray:
    """``[max_length + 1]``: the prompt's ids, a sentinel per residue still to come, ``</s>``."""
    unknown = np.full(max_length - len(prompt_ids), frame.mask_id, np.int32)
    return np.concatenate([prompt_ids, unknown, [frame.end_id]]).astype(np.int32)


class T5Decoder:
    """:class:`~prottrans_jax.generation.decoding.IncrementalDecoder` for T5's decoder.

    State: ``(encoded [batch, enc_length, embed], encoder tokens [batch, enc_length], cache)``.

    Attributes:
      module: the encoder-decoder.
      encoder_tokens: ``[enc_length]`` the encoder input every sequence is sampled from.
      capacity: decoder positions in the cache (the prefix plus the most tokens decoded).
    """

    def __init__(self, module: T5EncoderDecoder, encoder_tokens: np.ndarray, capacity: int):
        self.module, self.encoder_tokens, self.capacity = module, encoder_tokens, capacity

    def _decode(self, variables, encoded, enc_tokens, tokens: Array):
        return self.module.apply(variables, encoded, enc_tokens, tokens, tokens, enable_dropout=False, decode=True,
                                 max_decode_length=self.capacity, method=T5EncoderDecoder.decode, mutable=["cache"])

    def start(self, params, prefix: Array):
        """Encodes, then feeds ``prefix [batch, P]`` (decoder start and prompt) through the cache one by one."""
        batch = prefix.shape[0]
        enc_tokens = jnp.broadcast_to(jnp.asarray(self.encoder_tokens), (batch, len(self.encoder_tokens)))
        encoded = self.module.apply({"params": params}, enc_tokens, enable_dropout=False,
                                    method=T5EncoderDecoder.encode)
        full = jnp.zeros((batch, self.capacity), jnp.int32)
        shapes = jax.eval_shape(lambda: self._decode({"params": params}, encoded, enc_tokens, full)[1]["cache"])
        cache = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(state, tokens):
            return self.step(params, state, tokens)

        state, logits = jax.lax.scan(body, (encoded, enc_tokens, cache), prefix.T)
        return state, logits[-1]

    def step(self, params, state, tokens: Array):
        """``tokens [batch]`` -> ``(state, logits [batch, vocab])``."""
        encoded, enc_tokens, cache = state
        logits, variables = self._decode({"params": params, "cache": cache}, encoded, enc_tokens, tokens[:, None])
        return (encoded, enc_tokens, variables["cache"]), logits[:, 0]


class T5DenoisingScorer(PseudoLikelihoodScorer):
    """One residue per row replaced by ``<extra_id_0>``; the decoder's log-probability of it (teacher forced)."""

    def row_log_probs(self, params, enc_tokens: Array, targets: Array, positions: Array) -> Array:
        """``enc_tokens/targets [rows, T]`` (targets: residues then ``</s>``), ``positions [rows]`` -> ``[rows]``."""
        decoder_inputs = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))  # shifted right behind decoder start 0
        logits = self.module.apply({"params": params}, enc_tokens, decoder_inputs, targets, enable_dropout=False)
        at = jnp.take_along_axis(logits, positions[:, None, None], axis=1)[:, 0]  # [rows, vocab]
        truth = jnp.take_along_axis(targets, positions[:, None], axis=1)[:, 0]
        return jnp.take_along_axis(jax.nn.log_softmax(at, axis=-1), truth[:, None], axis=-1)[:, 0]

    def rows(self, residue_ids, pairs, rows):
        width = padded_length(max(len(residue_ids[p]) for p, _ in pairs) + 1)
        targets = np.full((rows, width), self.frame.pad_id, np.int32)
        for r, (p, _) in enumerate(pairs):
            targets[r, :len(residue_ids[p]) + 1] = np.append(residue_ids[p], self.frame.end_id)
        positions = np.zeros(rows, np.int32)
        positions[:len(pairs)] = [i for _, i in pairs]
        enc_tokens = targets.copy()
        enc_tokens[np.arange(len(pairs)), positions[:len(pairs)]] = self.frame.mask_id
        return enc_tokens, targets, positions
