"""ProtXLNet's 37 token ids (the released XLNetTokenizer's), TF-free: tables, encoding, left padding, spiece.model.

The released ``Rostlab/prot_xlnet`` tokenizer is a SentencePiece model (``spiece.model``, 238,192 bytes) read
by ``XLNetTokenizer``; its config says ``vocab_size`` 37 and ``pad_token_id`` 5. Its ids, and how sure we are:

====  =========================================  ==========================================================
id    piece                                      evidence
====  =========================================  ==========================================================
0     ``X`` (the unknown piece)                  confirmed: ``"X X X X X"`` encodes to ``[0, 4, 3]``
                                                 (ProtTrans issue #53); ``X`` and ``<unk>`` "will be encoded
                                                 as 0" (issue #10); ProtTrans' generation notebook decodes
                                                 ``A E T C <unk> A <unk>`` as ``A E T C X A X`` and
                                                 ``get_vocab()`` has a key ``'X'`` but no ``'▁X'``
                                                 (bayes_design), so piece 0 is spelt ``X``
1, 2  ``<s>``, ``</s>``                          inferred: XLNet's fixed layout (its pretraining code
                                                 hard-codes ids 0-8, and ProtTrans trained with that code)
3, 4  ``<cls>``, ``<sep>``                       confirmed: the ``[0, 4, 3]`` above ends ``<sep> <cls>``
5     ``<pad>``                                  confirmed: the released config's ``pad_token_id``
6-8   ``<mask>``, ``<eod>``, ``<eop>``           inferred: XLNet's fixed layout
9-16  ``. ( ) " - – £ €``                        inferred: XLNet's README trains its SentencePiece model
                                                 with exactly these user-defined symbols after ``<eop>``,
                                                 and 9 + 8 + 20 is the released 37
17-36 ``▁L ▁A ▁G ▁V ▁E ▁S ▁I ▁K ▁R ▁D``          confirmed: exactly 20 pieces start with ``▁`` (a public
      ``▁T ▁P ▁N ▁Q ▁F ▁Y ▁M ▁H ▁C ▁W``          RL environment asserts it on ``get_vocab()``), none of
                                                 them X, U, Z, O or B (consecutive X merge into one unk,
                                                 which only happens to unknown pieces). **Their order is
                                                 not confirmed**: no public text prints these ids. We use
                                                 ProtBert's order (the sibling model trained on the same
                                                 UniRef100); :func:`compare_with_sentencepiece_model` tells
                                                 a holder of the released file whether it agrees.
====  =========================================  ==========================================================

Sequence rule (ProtTrans' for ProtXLNet: ``re.sub(r"[UZOBX]", "<unk>", seq)``, since the released
tokenizer would merge runs of X into one id): :func:`prottrans_jax.alphabet.normalize_sequence` first
(upper case; gaps, stops and whitespace dropped; U Z O B J -> X), then every X is ``<unk>`` (0), one id
per residue. A model input is ``residues <sep> <cls>``; batches pad on the LEFT with ``<pad>``, so the
residues of a row of ``T`` tokens are positions ``[T - n - 2, T - 2)``, as ProtTrans slices them.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from prottrans_jax import alphabet

UNK_PIECE = "X"  # the released unknown piece (see the table above)
SPECIAL_PIECES = (UNK_PIECE, "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>")
UNK_ID, BOS_ID, EOS_PIECE_ID, CLS_ID, SEP_ID, PAD_ID, MASK_ID, EOD_ID, EOP_ID = range(9)
# XLNet's spm_train: control symbols <cls> <sep> <pad> <mask> <eod>, user-defined <eop> and punctuation.
PUNCTUATION_PIECES = (".", "(", ")", '"', "-", "\u2013", "\u00a3", "\u20ac")  # ids 9-16
RESIDUE_ORDER = "LAGVESIKRDTPNQFYMHCW"  # ids 17-36; order unconfirmed (see the module docstring)
FIRST_RESIDUE_ID = len(SPECIAL_PIECES) + len(PUNCTUATION_PIECES)  # 17
VOCAB_SIZE = FIRST_RESIDUE_ID + len(RESIDUE_ORDER)  # 37


def residue_ids() -> dict[str, int]:
    """Residue letter -> id: the 20 standard residues (17..36) and ``X`` -> ``<unk>`` (0)."""
    ids = {aa: FIRST_RESIDUE_ID + i for i, aa in enumerate(RESIDUE_ORDER)}
    ids["X"] = UNK_ID
    return ids


def pieces() -> list[str]:
    """The 37 SentencePiece pieces indexed by id (residues with SentencePiece's ``▁`` prefix)."""
    return list(SPECIAL_PIECES) + list(PUNCTUATION_PIECES) + [alphabet.SPM_WORD_BOUNDARY + aa for aa in RESIDUE_ORDER]


_TABLE = np.full(256, -1, np.int32)
for _aa, _i in residue_ids().items():
    _TABLE[ord(_aa)] = _i


def encode(sequence: str, context: str = "") -> list[int]:
    """Residue ids of ``sequence`` after normalisation (rare residues and X -> ``<unk>``), no special tokens.

    Raises:
      alphabet.InvalidResidueError: for a character that is not an amino-acid letter (``context`` names where).
    """
    residues = alphabet.normalize_sequence(sequence, context)
    return _TABLE[np.frombuffer(residues.encode("ascii"), np.uint8)].tolist()


def encode_for_model(sequence: str, context: str = "") -> list[int]:
    """What the released tokenizer gives ProtTrans' input: residue ids then ``<sep> <cls>``."""
    return encode(sequence, context) + [SEP_ID, CLS_ID]


def pad_left(rows: Sequence[Sequence[int]], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads encoded rows with ``<pad>``, as XLNetTokenizer does (``padding_side='left'``).

    Args:
      rows: token ids per sequence (e.g. from :func:`encode_for_model`).
      length: padded length; default the longest row.

    Returns:
      ``(ids, attention_mask)``, both int32 ``[len(rows), length]``; the mask is 1 on tokens, 0 on padding.

    Raises:
      ValueError: if a row is longer than ``length``.
    """
    longest = max((len(r) for r in rows), default=0)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"a row of {longest} tokens does not fit the padded length {length}")
    ids = np.full((len(rows), length), PAD_ID, np.int32)  # [batch, length]
    mask = np.zeros((len(rows), length), np.int32)
    for r, row in enumerate(rows):
        if len(row):
            ids[r, length - len(row):] = row
            mask[r, length - len(row):] = 1
    return ids, mask


def sentencepiece_model_proto():
    """ProtXLNet's SentencePiece model (37 pieces, WORD model) as a ``ModelProto``, ids as in the table above.

    Like XLNet's own: ``<unk>`` 0 (spelt ``X`` here, as released), ``<s>`` 1, ``</s>`` 2, control symbols
    ``<cls> <sep> <pad> <mask> <eod>`` 3-7, user-defined ``<eop>`` and punctuation 8-16, then residues. A
    WORD model (as ProtTrans' released ProtT5 model is) has no single-character or bare ``▁`` pieces, so
    an unknown residue is one unknown word; scores only order the residues. The normaliser is ``identity``
    (the released file's 238 kB are mostly an ``nmt_nfkc`` table, which changes nothing on residue text).
    """
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    piece_type = spm_pb2.ModelProto.SentencePiece
    model = spm_pb2.ModelProto()
    spec = model.trainer_spec
    spec.model_type = spm_pb2.TrainerSpec.WORD
    spec.vocab_size = VOCAB_SIZE
    spec.character_coverage = 1.0
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = UNK_ID, BOS_ID, EOS_PIECE_ID, -1
    spec.unk_piece = UNK_PIECE
    spec.control_symbols.extend(SPECIAL_PIECES[CLS_ID:EOP_ID])
    spec.user_defined_symbols.extend((SPECIAL_PIECES[EOP_ID],) + PUNCTUATION_PIECES)
    for normalizer in (model.normalizer_spec, model.denormalizer_spec):
        normalizer.name = "identity"
        normalizer.add_dummy_prefix = normalizer.remove_extra_whitespaces = normalizer.escape_whitespaces = (
            normalizer is model.normalizer_spec)
    for i, piece in enumerate(pieces()):
        if i == UNK_ID:
            kind = piece_type.UNKNOWN
        elif i < EOP_ID:
            kind = piece_type.CONTROL
        elif i < FIRST_RESIDUE_ID:
            kind = piece_type.USER_DEFINED
        else:
            kind = piece_type.NORMAL
        score = -1.0 - (i - FIRST_RESIDUE_ID) if kind == piece_type.NORMAL else 0.0
        model.pieces.add(piece=piece, score=score, type=kind)
    return model


def write_sentencepiece_model(path) -> str:
    """Writes ProtXLNet's ``spiece.model``; ``path`` is a file or an existing folder. Returns the path written."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "spiece.model")
    with open(path, "wb") as f:
        f.write(sentencepiece_model_proto().SerializeToString())
    return path


def compare_with_sentencepiece_model(path) -> list[str]:
    """Differences between our ids and a SentencePiece model's (e.g. the released ``spiece.model``).

    Compares what decides ids: each residue's piece id, the special and unknown ids. Returns one line per
    difference; an empty list means every id agrees.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.fspath(path))
    diffs = [f"vocabulary size {sp.get_piece_size()}, ours {VOCAB_SIZE}"] if sp.get_piece_size() != VOCAB_SIZE else []
    if sp.unk_id() != UNK_ID:
        diffs.append(f"unknown id {sp.unk_id()}, ours {UNK_ID}")
    expected = {piece: i for i, piece in enumerate(pieces()) if i != UNK_ID}
    for piece, ours in expected.items():
        theirs = sp.piece_to_id(piece)
        if theirs != ours:
            diffs.append(f"piece {piece!r}: id {theirs if theirs != sp.unk_id() else 'none'}, ours {ours}")
    return diffs
