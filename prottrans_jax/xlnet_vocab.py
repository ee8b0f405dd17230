"""ProtXLNet's vocabulary (the released XLNetTokenizer's 37 ids) as a ``seqio.Vocabulary``.

The ids, the evidence for each and the sequence rule are in :mod:`prottrans_jax.xlnet_alphabet` (TF-free,
for embedding and export). In short: residues 17-36, every X and rare residue (U Z O B J) ``<unk>`` 0, as
ProtTrans maps them for ProtXLNet; ``<cls>`` 3, ``<sep>`` 4, ``<pad>`` 5, ``<mask>`` 6, ``<eod>`` 7. A model
input is ``residues <sep> <cls>`` (:meth:`ProtXLNetVocabulary.encode_for_model`), batches pad on the LEFT
(:meth:`ProtXLNetVocabulary.pad_left`).

``encode`` and ``encode_tf`` (the data pipeline's path) give residue ids only, like the ProtT5/ProtBert
vocabularies. ``eos_id`` is ``<eod>``: XLNet's pretraining data ends every document (for ProtTrans, every
protein) with ``<eod>``; ``</s>`` (2) is never used by XLNet. Decoding stops at ``<eod>``; ``<unk>`` decodes
as ``X`` (its released spelling), ``<mask>`` and punctuation pieces as ``?``, the other specials as nothing.

ProtTXL, whose weights and vocabulary were never released, uses ProtBert's vocabulary
(``vocab.get_vocabulary('prot_bert')``, 30 ids, a protein framed ``[CLS] residues [SEP]``): a one-letter
vocabulary from the same group and the same UniRef100 corpus, with no SentencePiece quirks to carry.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from prottrans_jax import vocab
from prottrans_jax import xlnet_alphabet as xa


def _decode_text() -> tuple[str, ...]:
    text = ["X", "", "", "", "", "", vocab.UNK_TEXT, "", ""] + [vocab.UNK_TEXT] * len(xa.PUNCTUATION_PIECES)
    return tuple(text) + tuple(xa.RESIDUE_ORDER)


class ProtXLNetVocabulary(vocab._ResidueVocabulary):  # pylint: disable=protected-access
    """ProtXLNet's 37 ids; see the module docstring and :mod:`prottrans_jax.xlnet_alphabet`."""

    _RESIDUE_IDS = xa.residue_ids()
    _DECODE_TEXT = _decode_text()
    _PAD, _EOS, _UNK = xa.PAD_ID, xa.EOD_ID, xa.UNK_ID

    def __init__(self):
        super().__init__(extra_ids=0)

    @property
    def sep_id(self) -> int:
        return xa.SEP_ID

    @property
    def cls_id(self) -> int:
        return xa.CLS_ID

    @property
    def mask_id(self) -> int:
        return xa.MASK_ID

    @property
    def eod_id(self) -> int:
        return xa.EOD_ID

    def encode_for_model(self, sequence: str) -> list[int]:
        """Residue ids then ``<sep> <cls>``: the released tokenizer's ids for ProtTrans' input."""
        return xa.encode_for_model(sequence)

    def pad_left(self, rows: Sequence[Sequence[int]], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, attention_mask)`` int32 ``[batch, length]``, padded on the left (see ``xlnet_alphabet.pad_left``)."""
        return xa.pad_left(rows, length)


def get_xlnet_vocabulary() -> ProtXLNetVocabulary:
    """ProtXLNet's vocabulary (also ``vocab.get_vocabulary('prot_xlnet')``)."""
    return ProtXLNetVocabulary()
