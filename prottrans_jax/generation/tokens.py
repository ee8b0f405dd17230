"""How each family frames a protein for generation and scoring: residue ids, the context before, the end token.

Framings (the model's likelihood of a protein is that of its residues plus the end token, given the context):

* ProtTXL (ProtBert's vocabulary): ``[CLS] residues [SEP]``: context ``[CLS]``, end ``[SEP]``.
* ProtXLNet: its tokenizer writes a protein as ``residues <sep> <cls>``; a protein that follows another in a
  stream of such proteins sees ``<sep> <cls>`` before it. That is the context (no query is then left
  without a visible token, which XLNet's attention cannot express), and ``<sep>`` is the end.
* ProtT5's decoder: decoder start ``<pad>`` (id 0), residues, ``</s>``.
* BERT family (scoring only): ``[CLS] residues [SEP]``, residues replaced by ``[MASK]`` one at a time.

Sampling draws only the 20 standard residues (and the end token); scoring reads any residue the input
normalises to (``X`` included: ProtXLNet's vocabulary maps it to ``<unk>``).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from prottrans_jax import alphabet

FAMILIES = ("transfo_xl", "xlnet", "t5", "bert", "albert", "electra")


@dataclasses.dataclass(frozen=True)
class Framing:
    """One family's token layout around a protein.

    Attributes:
      residue_ids: residue letter (the 20 standard ones and ``X``) -> id.
      context: ids before the first residue (what the first residue is predicted from).
      end_id: the id that ends a protein.
      pad_id: padding id.
      mask_id: the id that hides a residue in pseudo-likelihood scoring (``[MASK]``, T5's ``<extra_id_0>``),
        or None for the autoregressive families.
      vocab_size: ids the model's logits cover (at least).
    """

    residue_ids: dict[str, int]
    context: tuple[int, ...]
    end_id: int
    pad_id: int
    mask_id: int | None
    vocab_size: int

    @functools.cached_property
    def standard_ids(self) -> np.ndarray:
        """``[20]`` ids of the standard residues, in ``alphabet.STANDARD_RESIDUES`` order."""
        return np.asarray([self.residue_ids[aa] for aa in alphabet.STANDARD_RESIDUES], np.int32)

    @functools.cached_property
    def _letters(self) -> dict[int, str]:
        return {i: aa for aa, i in self.residue_ids.items() if aa in alphabet.STANDARD_RESIDUES}

    def encode(self, sequence: str, where: str = "") -> np.ndarray:
        """Residue letters -> ``[len]`` int32 ids (no context or end).

        Raises:
          ValueError: for a letter without an id (sequences must be normalised first), naming ``where``.
        """
        try:
            return np.asarray([self.residue_ids[aa] for aa in sequence], np.int32)
        except KeyError as e:
            at = f" in {where}" if where else ""
            raise ValueError(f"residue {e.args[0]!r}{at} has no id in this model's vocabulary; expected letters "
                             f"{''.join(sorted(self.residue_ids))}") from None

    def decode(self, ids) -> str:
        """Standard-residue ids -> letters (any other id is an error: sampling never draws one)."""
        return "".join(self._letters[int(i)] for i in ids)

    def framed(self, residue_ids: list[np.ndarray], width: int, rows: int | None = None) -> np.ndarray:
        """``[rows, width]`` int32: each protein as context, residues, end, then padding (extra rows all pad)."""
        out = np.full((rows or len(residue_ids), width), self.pad_id, np.int32)
        for r, ids in enumerate(residue_ids):
            row = np.concatenate([np.asarray(self.context, np.int32), ids, [self.end_id]])
            out[r, :len(row)] = row
        return out

    def allowed_mask(self) -> np.ndarray:
        """``[vocab]`` bool: what sampling may draw (the 20 standard residues and the end token)."""
        allowed = np.zeros(self.vocab_size, bool)
        allowed[self.standard_ids] = True
        allowed[self.end_id] = True
        return allowed


def _bert_framing(vocab_size: int) -> Framing:
    ids = {aa: i for aa, i in alphabet.prot_bert_residue_ids().items() if aa in alphabet.STANDARD_RESIDUES + "X"}
    return Framing(ids, (alphabet.PROT_BERT_CLS_ID,), alphabet.PROT_BERT_SEP_ID, alphabet.PROT_BERT_PAD_ID,
                   alphabet.PROT_BERT_MASK_ID, vocab_size)


def _t5_framing(vocab_size: int) -> Framing:
    ids = {aa: i for aa, i in alphabet.prot_t5_residue_ids().items() if aa in alphabet.STANDARD_RESIDUES + "X"}
    return Framing(ids, (alphabet.PROT_T5_PAD_ID,), alphabet.PROT_T5_EOS_ID, alphabet.PROT_T5_PAD_ID,
                   alphabet.prot_t5_sentinel_id(0), vocab_size)


def _xlnet_framing(vocab_size: int) -> Framing:
    from prottrans_jax import xlnet_alphabet as xl  # TF-free ids (X is <unk>, as ProtTrans maps rare residues)

    return Framing(xl.residue_ids(), (xl.SEP_ID, xl.CLS_ID), xl.SEP_ID, xl.PAD_ID, None, vocab_size)


def framing(family: str, vocab_size: int) -> Framing:
    """The :class:`Framing` of a model family ('transfo_xl', 'xlnet', 't5', 'bert', 'albert', 'electra').

    Raises:
      ValueError: for another family, or a model whose vocabulary is smaller than the family's ids.
    """
    if family not in FAMILIES:
        raise ValueError(f"no protein framing for family {family!r}; expected one of {FAMILIES}")
    build = {"t5": _t5_framing, "xlnet": _xlnet_framing}.get(family, _bert_framing)
    frame = build(vocab_size)
    top = max([*frame.residue_ids.values(), *frame.context, frame.end_id, frame.mask_id or 0])
    if top >= vocab_size:
        raise ValueError(f"the model's vocabulary has {vocab_size} ids, too few for the {family} protein "
                         f"vocabulary (id {top} used)")
    return frame


def padded_length(length: int, segment: int | None = None, smallest: int = 8) -> int:
    """The shape a batch of ``length`` tokens is padded to, so that few shapes get compiled.

    Powers of two from ``smallest``; with a ``segment`` length, capped at it and beyond it whole segments.
    """
    if segment and length > segment:
        return -(-length // segment) * segment
    padded = max(smallest, 1 << max(0, length - 1).bit_length())
    return min(padded, segment) if segment else padded
