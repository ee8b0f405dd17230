"""Residue alphabet, sequence normalisation and the ProtT5/ProtBert id tables (TF-free).

Normalisation rule (one rule for every model family, applied before tokenizing):

* letters are upper-cased;
* whitespace, gap characters (``-`` and ``.``) and stop codons ``*`` are dropped;
* the rare or ambiguous residues U (selenocysteine), Z (Glx), O (pyrrolysine), B (Asx)
  and J (Leu/Ile) are mapped to X, as ProtTrans' training data preparation did;
* any other character is an error (see :class:`InvalidResidueError`).

ProtTrans' own embedding script maps only U, Z, O; we also map B so that every model sees
exactly the 21 letters ``ACDEFGHIKLMNPQRSTVWYX``.
"""

from __future__ import annotations

import re

# The 20 standard amino acids.
STANDARD_RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
# Letters accepted in input and what they become after normalisation.
RARE_TO_X = {"U": "X", "Z": "X", "O": "X", "B": "X", "J": "X"}
ACCEPTED_LETTERS = frozenset(STANDARD_RESIDUES + "X" + "".join(RARE_TO_X))
# Characters silently removed: gaps, alignment dots, whitespace, and stop codons.
DROPPED_CHARACTERS = "-.* \t\r\n\v\f"

# ---------------------------------------------------------------------------------------
# ProtT5: the released SentencePiece model (28 pieces) plus 100 sentinels = 128 ids.
# ---------------------------------------------------------------------------------------
PROT_T5_PAD_ID = 0
PROT_T5_EOS_ID = 1
PROT_T5_UNK_ID = 2
# Residue pieces 3..27, in the order of the released spiece.model (frequency order;
# note W 21 before C 22, checked against the released file in tests/test_vocab.py).
PROT_T5_RESIDUE_ORDER = "ALGVSREDTIPKFQNYMHWCXBOUZ"
PROT_T5_BASE_VOCAB_SIZE = 3 + len(PROT_T5_RESIDUE_ORDER)  # 28
PROT_T5_NUM_SENTINELS = 100
PROT_T5_VOCAB_SIZE = PROT_T5_BASE_VOCAB_SIZE + PROT_T5_NUM_SENTINELS  # 128
PROT_T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
SPM_WORD_BOUNDARY = "\u2581"  # '▁', SentencePiece's word-boundary marker.


def prot_t5_residue_ids() -> dict[str, int]:
    """Residue letter -> ProtT5 id (3..27)."""
    return {aa: 3 + i for i, aa in enumerate(PROT_T5_RESIDUE_ORDER)}


def prot_t5_sentinel_id(i: int) -> int:
    """Id of ``<extra_id_i>``: 127 - i, as in HuggingFace's T5Tokenizer and seqio."""
    if not 0 <= i < PROT_T5_NUM_SENTINELS:
        raise ValueError(f"sentinel index {i} out of range [0, {PROT_T5_NUM_SENTINELS})")
    return PROT_T5_VOCAB_SIZE - 1 - i


def prot_t5_id_to_token() -> list[str]:
    """All 128 ProtT5 tokens, indexed by id (residues without the '▁' prefix)."""
    tokens = list(PROT_T5_SPECIAL_TOKENS) + list(PROT_T5_RESIDUE_ORDER)
    tokens += [f"<extra_id_{PROT_T5_VOCAB_SIZE - 1 - i}>" for i in range(PROT_T5_BASE_VOCAB_SIZE, PROT_T5_VOCAB_SIZE)]
    return tokens


# ---------------------------------------------------------------------------------------
# ProtBert: 30-token WordPiece vocabulary (vocab.txt, id = line number).
# ---------------------------------------------------------------------------------------
PROT_BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PROT_BERT_PAD_ID, PROT_BERT_UNK_ID, PROT_BERT_CLS_ID, PROT_BERT_SEP_ID, PROT_BERT_MASK_ID = range(5)
PROT_BERT_RESIDUE_ORDER = "LAGVESIKRDTPNQFYMHCWXUBZO"
PROT_BERT_VOCAB_SIZE = len(PROT_BERT_SPECIAL_TOKENS) + len(PROT_BERT_RESIDUE_ORDER)  # 30


def prot_bert_residue_ids() -> dict[str, int]:
    """Residue letter -> ProtBert id (5..29)."""
    return {aa: 5 + i for i, aa in enumerate(PROT_BERT_RESIDUE_ORDER)}


def prot_bert_tokens() -> list[str]:
    """The 30 ProtBert tokens indexed by id (the lines of ProtBert's vocab.txt)."""
    return list(PROT_BERT_SPECIAL_TOKENS) + list(PROT_BERT_RESIDUE_ORDER)


# ---------------------------------------------------------------------------------------
# Normalisation.
# ---------------------------------------------------------------------------------------
class InvalidResidueError(ValueError):
    """A sequence contains a character that is not an amino-acid letter."""

    def __init__(self, char: str, position: int, context: str = ""):
        self.char = char
        self.position = position
        where = f" in {context}" if context else ""
        super().__init__(
            f"invalid residue {char!r} at position {position + 1}{where}: expected one of "
            f"{''.join(sorted(ACCEPTED_LETTERS))} (case-insensitive; gaps '-', '.', stop '*' "
            "and whitespace are ignored)"
        )


_DROP_RE = re.compile("[" + re.escape(DROPPED_CHARACTERS) + "]")
_TRANSLATE = str.maketrans(RARE_TO_X)
_INVALID_RE = re.compile("[^" + "".join(sorted(ACCEPTED_LETTERS)) + "]")


def normalize_sequence(sequence: str, context: str = "") -> str:
    """Returns the canonical residue string (upper case, gaps dropped, UZOBJ -> X).

    Args:
      sequence: raw residues, possibly lower case, with gaps or whitespace.
      context: where the sequence came from, quoted in errors (e.g. ``"file.fa, record sp|P1"``).

    Raises:
      InvalidResidueError: for a character that is not an amino-acid letter.
    """
    cleaned = _DROP_RE.sub("", sequence.upper())
    bad = _INVALID_RE.search(cleaned)
    if bad is not None:
        # Report the position in the caller's original string.
        raw_pos = _position_in_raw(sequence, bad.group())
        raise InvalidResidueError(bad.group(), raw_pos, context)
    return cleaned.translate(_TRANSLATE)


def _position_in_raw(raw: str, char: str) -> int:
    upper = raw.upper()
    return upper.find(char)


def space_separated(sequence: str) -> str:
    """'MKV' -> 'M K V': the input format of ProtTrans' HuggingFace tokenizers."""
    return " ".join(sequence)


# ---------------------------------------------------------------------------------------
# Tokenizer files (our own, built from the tables above; no released file is copied).
# ---------------------------------------------------------------------------------------
def _file_path(path, default_name: str) -> str:
    import os

    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, default_name)
    return path


def prot_t5_sentencepiece_model_proto():
    """The ProtT5 SentencePiece model (28 pieces, WORD model) as a ``ModelProto``.

    Ids match the released ProtT5 ``spiece.model``: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2,
    then ``'▁A', '▁L', ...`` in :data:`PROT_T5_RESIDUE_ORDER`. The normaliser is
    ``identity`` (the released file uses ``nmt_nfkc``; both give the same ids on normalised,
    space-separated residues). Scores only order the pieces: a WORD model ignores them.
    """
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    model = spm_pb2.ModelProto()
    spec = model.trainer_spec
    spec.model_type = spm_pb2.TrainerSpec.WORD
    spec.vocab_size = PROT_T5_BASE_VOCAB_SIZE
    spec.character_coverage = 1.0
    spec.hard_vocab_limit = False
    spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id = PROT_T5_PAD_ID, PROT_T5_EOS_ID, PROT_T5_UNK_ID, -1
    spec.pad_piece, spec.eos_piece, spec.unk_piece = PROT_T5_SPECIAL_TOKENS
    for normalizer in (model.normalizer_spec, model.denormalizer_spec):
        normalizer.name = "identity"
        normalizer.add_dummy_prefix = normalizer is model.normalizer_spec
        normalizer.remove_extra_whitespaces = normalizer is model.normalizer_spec
        normalizer.escape_whitespaces = normalizer is model.normalizer_spec
    types = {"<pad>": spm_pb2.ModelProto.SentencePiece.CONTROL, "</s>": spm_pb2.ModelProto.SentencePiece.CONTROL,
             "<unk>": spm_pb2.ModelProto.SentencePiece.UNKNOWN}
    for token in PROT_T5_SPECIAL_TOKENS:
        model.pieces.add(piece=token, score=0.0, type=types[token])
    for rank, aa in enumerate(PROT_T5_RESIDUE_ORDER):
        model.pieces.add(piece=SPM_WORD_BOUNDARY + aa, score=-1.0 - rank, type=spm_pb2.ModelProto.SentencePiece.NORMAL)
    return model


def write_prot_t5_sentencepiece_model(path) -> str:
    """Writes our ProtT5 ``spiece.model`` (see :func:`prot_t5_sentencepiece_model_proto`).

    Args:
      path: file to write, or an existing directory (then ``<path>/spiece.model``).

    Returns:
      The path written.
    """
    path = _file_path(path, "spiece.model")
    with open(path, "wb") as f:
        f.write(prot_t5_sentencepiece_model_proto().SerializeToString())
    return path


def write_prot_bert_vocab(path) -> str:
    """Writes ProtBert's 30-line ``vocab.txt`` (one token a line, id = line number).

    Args:
      path: file to write, or an existing directory (then ``<path>/vocab.txt``).

    Returns:
      The path written.
    """
    path = _file_path(path, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in prot_bert_tokens()))
    return path
