"""SeqIO vocabularies for ProtT5 (128 ids) and ProtBert (30 ids), built on alphabet.py's tables.

Normalisation (the rule of :func:`prottrans_jax.alphabet.normalize_sequence`), applied by
``encode`` and ``encode_tf`` alike:

* letters are upper-cased;
* whitespace, gaps ``-`` / ``.`` and stop ``*`` are dropped;
* U, Z, O, B and J become X (so a model sees only ``ACDEFGHIKLMNPQRSTVWYX``).

Residues are given unseparated (``"MKV"``): one character is one token. Python ``encode``
raises :class:`~prottrans_jax.alphabet.InvalidResidueError` for any other character; the
TensorFlow path ``encode_tf`` (the data pipeline's hot path, validated upstream by the FASTA
reader) maps such a byte to ``unk_id`` instead. Neither adds EOS, [CLS] or [SEP]: seqio's
``append_eos`` and our preprocessors do.

Decoding follows :class:`seqio.Vocabulary`: it stops at the first EOS, and ids at or past the
base vocabulary (ProtT5's sentinels) decode as unk. Residue ids decode to their letters,
unk (and ProtBert's [MASK]) to ``"?"``, and pad, EOS and [CLS] to nothing.
"""

from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf

from prottrans_jax import alphabet

# RE2 class of the characters the normalisation drops (alphabet.DROPPED_CHARACTERS).
_DROP_PATTERN = r"[-.*\s\v]"
UNK_TEXT = "?"


def _byte_table(residue_ids: dict[str, int], unk_id: int) -> np.ndarray:
    """byte value -> id: both letter cases of each residue, rare letters as X, the rest unk."""
    table = np.full(256, unk_id, np.int32)
    for letter in alphabet.ACCEPTED_LETTERS:
        token_id = residue_ids[alphabet.RARE_TO_X.get(letter, letter)]
        table[ord(letter)] = table[ord(letter.lower())] = token_id
    return table


class _ResidueVocabulary(seqio.Vocabulary):
    """One token per residue letter; subclasses set the id tables below."""

    _RESIDUE_IDS: dict[str, int]
    _DECODE_TEXT: tuple[str, ...]  # id -> text, for the base vocabulary
    _PAD, _EOS, _UNK = 0, 1, 2

    def __init__(self, extra_ids: int = 0):
        super().__init__(extra_ids=extra_ids)
        self._table = _byte_table(self._RESIDUE_IDS, self._UNK)

    @property
    def pad_id(self) -> int:
        return self._PAD

    @property
    def eos_id(self) -> int:
        return self._EOS

    @property
    def unk_id(self) -> int:
        return self._UNK

    @property
    def _base_vocab_size(self) -> int:
        return len(self._DECODE_TEXT)

    @property
    def residue_ids(self) -> tuple[int, ...]:
        """Ids of the 20 standard amino acids (ascending), e.g. for random replacement."""
        return tuple(sorted(self._RESIDUE_IDS[aa] for aa in alphabet.STANDARD_RESIDUES))

    def _encode(self, s) -> list[int]:
        if isinstance(s, bytes):
            s = s.decode("utf-8")
        residues = alphabet.normalize_sequence(s)
        return self._table[np.frombuffer(residues.encode("ascii"), np.uint8)].tolist()

    def _decode(self, ids) -> str:
        size = self._base_vocab_size
        return "".join(self._DECODE_TEXT[i] if 0 <= i < size else UNK_TEXT for i in ids)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        """String scalar -> int32 [length]; rank-k strings -> RaggedTensor of rank k + 1."""
        s = tf.convert_to_tensor(s, dtype=tf.string)
        s = tf.strings.regex_replace(s, _DROP_PATTERN, "")
        table = tf.constant(self._table)
        if s.shape.rank == 0:
            return tf.gather(table, tf.cast(tf.io.decode_raw(s, tf.uint8), tf.int32))
        if s.shape.rank is None:
            raise ValueError("encode_tf needs strings of known rank")
        chars = tf.strings.bytes_split(s)
        # Every element of flat_values is one byte, so decode_raw gives a dense [n, 1].
        codes = tf.reshape(tf.io.decode_raw(chars.flat_values, tf.uint8), [-1])
        return chars.with_flat_values(tf.gather(table, tf.cast(codes, tf.int32)))

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.where(ids < 0, self._UNK, ids)
        return tf.strings.reduce_join(tf.gather(tf.constant(self._DECODE_TEXT), ids), axis=-1)

    def decode_tf(self, ids) -> tf.Tensor:
        """Detokenizes [..., length] ids (dense or ragged) through the first EOS."""
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=self._PAD)
        return super().decode_tf(tf.cast(ids, tf.int32))

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.extra_ids == other.extra_ids

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.extra_ids))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ProtT5Vocabulary(_ResidueVocabulary):
    """ProtT5's 128 ids: the released ``spiece.model`` (28) plus 100 sentinels.

    pad 0, eos 1, unk 2, residues 3..27 (``A L G V S R E D T I P K F Q N Y M H W C X B O U Z``;
    B O U Z are never produced, normalisation maps them to X), ``<extra_id_i>`` = 127 - i, as
    HuggingFace's ``T5Tokenizer`` and seqio's ``extra_ids=100`` number them.
    """

    _RESIDUE_IDS = alphabet.prot_t5_residue_ids()
    _DECODE_TEXT = ("", "", UNK_TEXT) + tuple(alphabet.PROT_T5_RESIDUE_ORDER)
    _PAD, _EOS, _UNK = alphabet.PROT_T5_PAD_ID, alphabet.PROT_T5_EOS_ID, alphabet.PROT_T5_UNK_ID

    def __init__(self):
        super().__init__(extra_ids=alphabet.PROT_T5_NUM_SENTINELS)

    @property
    def num_sentinels(self) -> int:
        return alphabet.PROT_T5_NUM_SENTINELS

    def sentinel_id(self, i: int) -> int:
        """Id of ``<extra_id_i>`` (127 - i)."""
        return alphabet.prot_t5_sentinel_id(i)


class ProtBertVocabulary(_ResidueVocabulary):
    """ProtBert's 30 ids, as its released ``vocab.txt``.

    [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3 (= ``eos_id``, so seqio's ``append_eos`` adds the
    trailing [SEP]), [MASK] 4, residues 5..29 (``L A G V E S I K R D T P N Q F Y M H C W X U B Z
    O``). ``encode`` gives residue ids only; preprocessors add [CLS] and [SEP].
    """

    _RESIDUE_IDS = alphabet.prot_bert_residue_ids()
    _DECODE_TEXT = ("", UNK_TEXT, "", "", UNK_TEXT) + tuple(alphabet.PROT_BERT_RESIDUE_ORDER)
    _PAD, _EOS, _UNK = alphabet.PROT_BERT_PAD_ID, alphabet.PROT_BERT_SEP_ID, alphabet.PROT_BERT_UNK_ID

    def __init__(self):
        super().__init__(extra_ids=0)

    @property
    def cls_id(self) -> int:
        return alphabet.PROT_BERT_CLS_ID

    @property
    def sep_id(self) -> int:
        return alphabet.PROT_BERT_SEP_ID

    @property
    def mask_id(self) -> int:
        return alphabet.PROT_BERT_MASK_ID


def _prot_xlnet() -> _ResidueVocabulary:
    from prottrans_jax import xlnet_vocab  # it subclasses this module's base: imported on demand

    return xlnet_vocab.ProtXLNetVocabulary()


# ProtTXL uses "prot_bert" (see prottrans_jax.xlnet_vocab).
_VOCABULARIES = {"prot_t5": ProtT5Vocabulary, "prot_bert": ProtBertVocabulary, "prot_xlnet": _prot_xlnet}


def get_vocabulary(name: str) -> _ResidueVocabulary:
    """Returns the vocabulary called ``name`` ("prot_t5", "prot_bert" or "prot_xlnet")."""
    try:
        return _VOCABULARIES[name]()
    except KeyError:
        raise ValueError(f"unknown vocabulary {name!r}; choose one of {sorted(_VOCABULARIES)}") from None
