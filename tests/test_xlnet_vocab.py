"""ProtXLNet's vocabulary: our ids equal transformers' XLNetTokenizer on our written files, on real proteins."""

import re

import numpy as np
import pytest
import seqio
import sentencepiece as spm
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from prottrans_jax import alphabet, cli, vocab, xlnet_vocab
from prottrans_jax import xlnet_alphabet as xa
from prottrans_jax.hf import tokenizer_files

from proteins import read_proteins


@pytest.fixture(scope="module")
def proteins(demo_corpus):
    """The first 300 demo proteins plus every one with a rare residue (X U O, runs of X among them)."""
    seqs = read_proteins(demo_corpus, 14400)
    rare = [s for s in seqs if set(s) & set("XUZOBJ")]
    assert len(rare) > 50 and any("XX" in s for s in rare) and any("U" in s for s in rare)
    return seqs[:300] + rare


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return tokenizer_files.write_xlnet_tokenizer(tmp_path_factory.mktemp("xlnet_tok"))


@pytest.fixture(scope="module")
def hf_tok(tok_dir):
    from transformers import XLNetTokenizer

    return XLNetTokenizer.from_pretrained(str(tok_dir))


def _prottrans_input(seq):
    """ProtTrans' ProtXLNet input: residues space-separated, U Z O B X -> <unk> (its notebooks since Oct 2020)."""
    return re.sub(r"[UZOBX]", "<unk>", alphabet.space_separated(seq))


def _released_era_encode(sp, text):
    """transformers 3.x's XLNetTokenizer (2020): special tokens split out, the rest SentencePiece, then <sep> <cls>."""
    ids = []
    for part in re.split(r"(<unk>|<mask>)", text):
        if part in ("<unk>", "<mask>"):
            ids.append(sp.piece_to_id(part))  # a name that is no piece is the unknown id
        elif part.strip():
            ids += sp.encode(" ".join(part.split()))
    return ids + [sp.piece_to_id("<sep>"), sp.piece_to_id("<cls>")]


def test_written_spiece_model_pieces_ids_and_types(tok_dir, tmp_path):
    model = spm_pb2.ModelProto()
    model.ParseFromString((tok_dir / "spiece.model").read_bytes())
    kinds = spm_pb2.ModelProto.SentencePiece
    assert len(model.pieces) == 37 and model.trainer_spec.model_type == spm_pb2.TrainerSpec.WORD
    assert [p.type for p in model.pieces] == [kinds.UNKNOWN] + [kinds.CONTROL] * 7 + [kinds.USER_DEFINED] * 9 + [
        kinds.NORMAL] * 20
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "spiece.model"))
    v = xlnet_vocab.get_xlnet_vocabulary()
    named = {"<cls>": v.cls_id, "<sep>": v.sep_id, "<pad>": v.pad_id, "<mask>": v.mask_id, "<eod>": v.eod_id}
    assert {name: sp.piece_to_id(name) for name in named} == named == {"<cls>": 3, "<sep>": 4, "<pad>": 5,
                                                                      "<mask>": 6, "<eod>": 7}
    assert sp.unk_id() == v.unk_id == 0 and sp.id_to_piece(0) == "X"
    assert [sp.piece_to_id("\u2581" + aa) for aa in alphabet.STANDARD_RESIDUES] == v.encode(
        alphabet.STANDARD_RESIDUES)
    assert xa.compare_with_sentencepiece_model(tok_dir / "spiece.model") == []
    # A model with two residues swapped is caught, naming both.
    model.pieces[17].piece, model.pieces[18].piece = model.pieces[18].piece, model.pieces[17].piece
    (tmp_path / "swapped.model").write_bytes(model.SerializeToString())
    diffs = xa.compare_with_sentencepiece_model(tmp_path / "swapped.model")
    assert len(diffs) == 2 and "'\u2581L': id 18, ours 17" in diffs[0] and "'\u2581A': id 17, ours 18" in diffs[1]


def test_released_evidence_pinned(tok_dir, hf_tok):
    """Each public observation of the released tokenizer, reproduced on our files (xlnet_alphabet's table)."""
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "spiece.model"))
    # ProtTrans issue #53: with the old [UZOB] rule, "X X X X X" encoded as [0, 4, 3] (the X run merges).
    assert _released_era_encode(sp, "X X X X X") == [0, 4, 3]
    # Issue #10: X and <unk> are both 0. Generation notebook: "A E T C <unk> A <unk>" decodes to A E T C X A X.
    ids = hf_tok("A E T C <unk> A <unk>")["input_ids"]
    assert ids == _released_era_encode(sp, "A E T C <unk> A <unk>") == xa.encode_for_model("AETCZAO")
    assert " ".join(" ".join(hf_tok.decode(ids[:-2])).split()) == "A E T C X A X"
    # Released config: vocab_size 37, pad_token_id 5. get_vocab(): 'X' but no '▁X', exactly 20 '▁' pieces.
    vocab_map = hf_tok.get_vocab()
    assert len(hf_tok) == len(vocab_map) == 37 and hf_tok.pad_token_id == 5 and hf_tok.padding_side == "left"
    assert vocab_map["X"] == 0 and "\u2581X" not in vocab_map
    assert sorted(k for k in vocab_map if k.startswith("\u2581")) == sorted("\u2581" + a for a in "ACDEFGHIKLMNPQRSTVWY")
    # ProtTrans' embedding slice [pad_len - seq_len - 2 : pad_len - 2] of a left-padded batch is the residues.
    seqs = ["MKV", "AETCZAO"]
    batch = hf_tok([_prottrans_input(s) for s in seqs], padding=True)["input_ids"]
    for row, seq in zip(batch, seqs):
        assert row[len(row) - len(seq) - 2:len(row) - 2] == xa.encode(seq)


def test_ids_equal_hf_and_sentencepiece_on_real_proteins(proteins, tok_dir, hf_tok):
    from transformers import AutoTokenizer

    v = vocab.get_vocabulary("prot_xlnet")
    ours = [v.encode_for_model(s) for s in proteins]
    texts = [_prottrans_input(s) for s in proteins]
    assert hf_tok(texts)["input_ids"] == ours
    assert AutoTokenizer.from_pretrained(str(tok_dir))(texts[:40])["input_ids"] == ours[:40]
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "spiece.model"))
    assert [_released_era_encode(sp, t) for t in texts] == ours
    # The data pipeline's TF path: residue ids, <sep> <cls> added by the model framing.
    tf_ids = v.encode_tf(tf.constant(proteins)).to_list()
    assert [row + [v.sep_id, v.cls_id] for row in tf_ids] == ours
    assert sum(row.count(v.unk_id) for row in ours) == sum(len(re.findall("[XUZOBJ]", s)) for s in proteins) > 150


def test_left_padding_matches_hf(proteins, hf_tok):
    v = xlnet_vocab.get_xlnet_vocabulary()
    seqs = proteins[:8]
    hf = hf_tok([_prottrans_input(s) for s in seqs], padding=True)
    ids, mask = v.pad_left([v.encode_for_model(s) for s in seqs])  # [8, longest]
    assert ids.tolist() == hf["input_ids"] and mask.tolist() == hf["attention_mask"]
    assert ids.dtype == mask.dtype == np.int32 and (ids[:, -2:] == [v.sep_id, v.cls_id]).all()
    ids, mask = v.pad_left([[9], []], length=3)
    assert ids.tolist() == [[5, 5, 9], [5, 5, 5]] and mask.tolist() == [[0, 0, 1], [0, 0, 0]]
    with pytest.raises(ValueError, match="row of 4 tokens does not fit the padded length 3"):
        v.pad_left([[1, 2, 3, 4]], length=3)


def test_decode_round_trip(proteins, hf_tok):
    v = xlnet_vocab.get_xlnet_vocabulary()
    seqs = proteins[-40:]  # rare residues among them: U Z O B J come back as X
    canonical = [alphabet.normalize_sequence(s) for s in seqs]
    ids = [v.encode(s) for s in seqs]
    assert [v.decode(x) for x in ids] == canonical
    assert [hf_tok.decode(x).replace(" ", "") for x in ids] == canonical
    padded = tf.ragged.constant([x + [v.eos_id] for x in ids]).to_tensor(v.pad_id)
    assert [s.decode() for s in v.decode_tf(padded).numpy()] == canonical
    # <sep> <cls> and padding decode to nothing, <mask> to "?", and decoding stops at <eod>.
    assert v.decode([v.pad_id] + v.encode_for_model("MK") + [v.mask_id, v.eod_id] + v.encode("AC")) == "MK?"


def test_seqio_tokenize_append_eos_and_registry():
    v = vocab.get_vocabulary("prot_xlnet")
    features = {"targets": seqio.Feature(v)}
    ds = tf.data.Dataset.from_tensor_slices({"targets": ["MKV", "acd-x", "MUX"]})
    ds = seqio.preprocessors.append_eos(seqio.preprocessors.tokenize(ds, features), features)
    got = [ex["targets"].tolist() for ex in ds.as_numpy_iterator()]
    assert got == [v.encode("MKV") + [7], v.encode("ACD") + [0, 7], v.encode("M") + [0, 0, 7]]
    assert (v.vocab_size, v.pad_id, v.unk_id, v.eos_id, v.sep_id, v.cls_id, v.mask_id) == (37, 5, 0, 7, 4, 3, 6)
    assert len(v.residue_ids) == 20 and 0 not in v.residue_ids and v.residue_ids == tuple(sorted(v.residue_ids))
    assert v == xlnet_vocab.get_xlnet_vocabulary() != vocab.get_vocabulary("prot_bert")
    assert len({v, xlnet_vocab.ProtXLNetVocabulary(), vocab.ProtBertVocabulary()}) == 2
    with pytest.raises(ValueError, match="unknown vocabulary 'esm'.*prot_xlnet"):
        vocab.get_vocabulary("esm")
    with pytest.raises(alphabet.InvalidResidueError, match=r"invalid residue '1' at position 3"):
        v.encode_for_model("MK1V")


def test_cli_writes_the_xlnet_tokenizer_folder(tmp_path, capsys, tok_dir):
    argv = ["write-tokenizer", "--family", "prot_xlnet", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    names = tokenizer_files.XLNET_TOKENIZER_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert all((tmp_path / n).read_bytes() == (tok_dir / n).read_bytes() for n in names)
    (tmp_path / "tokenizer_config.json").write_text("stale")
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "spiece.model") in err[0] and "--overwrite" in err[0]
    assert (tmp_path / "tokenizer_config.json").read_text() == "stale"
    assert cli.main(argv + ["--overwrite"]) == 0
    assert (tmp_path / "tokenizer_config.json").read_bytes() == (tok_dir / "tokenizer_config.json").read_bytes()
