"""ProtXLNet through the CLI both ways: transformers' folders -> ``import-hf`` -> a training directory ->
``export-hf`` -> a folder ``from_pretrained`` loads; parity on real proteins tokenised by the exported
tokenizer; refusals. Module-level parity and the weight map are tested in test_xlnet.py (helpers reused).
"""

from __future__ import annotations

import numpy as np
import pytest

import torch  # noqa: E402  (a test requirement: a broken install fails, never skips)
import transformers  # noqa: E402

from hf_loading import load_clean  # noqa: E402
from hf_refusals import cli_refusal, folder_variant  # noqa: E402
from model_dirs import write_model_dir  # noqa: E402
from proteins import read_proteins  # noqa: E402
from test_xlnet import assert_close, hf_model, jax_run, permutation_inputs, torch_run  # noqa: E402

from prottrans_jax import alphabet, cli, model_io, xlnet_alphabet  # noqa: E402

SEGMENT = 12  # residues per segment in the memory cases
LM, BASE = "XLNetLMHeadModel", "XLNetModel"


@pytest.fixture(scope="module")
def proteins(demo_corpus):
    seqs = [alphabet.normalize_sequence(s) for s in read_proteins(demo_corpus, 3)]
    assert min(map(len, seqs)) >= 2 * SEGMENT
    return seqs


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """transformers' own XLNetLMHeadModel folder -> import-hf -> training dir -> export-hf (full and encoder-only)."""
    work = tmp_path_factory.mktemp("xlnet_cli")
    model = hf_model(LM, seed=5)
    model.save_pretrained(work / "hf")
    assert cli.main(["import-hf", "--hf", str(work / "hf"), "--out", str(work / "run"), "--family", "xlnet"]) == 0
    for out, flags in (("out", []), ("out_enc", ["--encoder-only"])):
        assert cli.main(["export-hf", "--checkpoint", str(work / "run"), "--out", str(work / out), *flags]) == 0
    return work, model, model_io.load_model(work / "run")


def tokenised(folder, seqs):
    """The ProtTrans route: the exported XLNetTokenizer on space-separated residues, padded (on the left)."""
    tokenizer = transformers.XLNetTokenizer.from_pretrained(folder)
    batch = tokenizer([alphabet.space_separated(s) for s in seqs], padding=True, return_token_type_ids=True,
                      return_tensors="np")
    return batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.float32), batch["token_type_ids"]


def assert_state_dicts_equal(a, b):
    a, b = a.state_dict(), b.state_dict()
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


def test_round_trip_is_bit_identical_and_ships_the_tokenizer(round_trip, proteins):
    """Every tensor comes back unchanged (the head's and the backbone's); the tokenizer gives our ids, left-padded."""
    work, model, loaded = round_trip
    assert loaded.architecture == LM and loaded.config.mem_len == 10 and loaded.step == 0
    assert_state_dicts_equal(model, load_clean(transformers.XLNetLMHeadModel, work / "out"))
    assert_state_dicts_equal(model.transformer, load_clean(transformers.XLNetModel, work / "out_enc"))
    seqs = [s[:n] for s, n in zip(proteins, (21, 14, 7))]
    ids, mask, _ = tokenised(work / "out", seqs)
    want_ids, want_mask = xlnet_alphabet.pad_left([xlnet_alphabet.encode_for_model(s) for s in seqs])
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    assert mask[2, 0] == 0 and mask[2, -1] == 1  # left padding


@pytest.mark.parametrize("case", ["padded", "memory", "permutation"])
def test_imported_training_directory_matches_transformers(round_trip, proteins, case):
    """Logits and every hidden state (both streams) and memory within 1e-4 on real proteins: padded batch with
    token types; a second segment reading the first's memory (mem_len 10 < 12); perm_mask + target_mapping."""
    work, model, loaded = round_trip
    config, params = loaded.config, loaded.params
    if case == "padded":
        ids, mask, types = tokenised(work / "out", [s[:n] for s, n in zip(proteins, (21, 14, 7))])
        assert {0, 2} <= set(np.unique(types)) and mask.min() == 0  # <cls> in a segment of its own; padding
        arrays = dict(attention_mask=mask, token_type_ids=types)
        assert_close(jax_run(LM, config, params, ids, **arrays), torch_run(model, ids, **arrays))
        return
    ids = np.asarray([xlnet_alphabet.encode(s[: 2 * SEGMENT]) for s in proteins], np.int32)
    first, second = ids[:, :SEGMENT], ids[:, SEGMENT:]
    ours1, ref1 = jax_run(LM, config, params, first), torch_run(model, first)
    assert_close(ours1, ref1)
    arrays = {}
    if case == "permutation":
        perm, target = permutation_inputs(*second.shape, num_predict=4, seed=2)
        arrays = dict(perm_mask=perm, target_mapping=target)
    ours2 = jax_run(LM, config, params, second, mems=ours1[2], **arrays)
    assert ours2[0].shape[1] == (4 if arrays else SEGMENT)
    assert_close(ours2, torch_run(model, second, mems=ref1[2], **arrays))


def test_export_of_a_training_directory_loads_and_matches(tmp_path, proteins):
    """Our trainer's layout -> export-hf -> XLNetLMHeadModel: query-stream logits and both streams' states with
    memory, on ids from the exported tokenizer; then the encoder-only export of the same directory."""
    config, params = write_model_dir(tmp_path / "run", "xlnet")
    assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    model = load_clean(transformers.XLNetLMHeadModel, tmp_path / "hf")
    ids, _, _ = tokenised(tmp_path / "hf", [s[: 2 * SEGMENT - 2] for s in proteins])  # + <sep> <cls>
    first, second = ids[:, :SEGMENT], ids[:, SEGMENT:]
    ours1, ref1 = jax_run(LM, config, params, first), torch_run(model, first)
    assert_close(ours1, ref1)
    perm, target = permutation_inputs(*second.shape, num_predict=3, seed=3)
    arrays = dict(perm_mask=perm, target_mapping=target)
    assert_close(jax_run(LM, config, params, second, mems=ours1[2], **arrays),
                 torch_run(model, second, mems=ref1[2], **arrays))


def test_a_bare_xlnet_model_folder_round_trips_encoder_only(tmp_path, capsys):
    """An XLNetModel folder imports as the backbone; export-hf asks for --encoder-only, then writes it unchanged."""
    model = hf_model(BASE, seed=6)
    model.save_pretrained(tmp_path / "hf")
    assert cli.main(["import-hf", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    assert model_io.load_model(tmp_path / "run").architecture == BASE
    err = cli_refusal(capsys, tmp_path / "full", ["export-hf", "--checkpoint", str(tmp_path / "run"), "--out",
                                                  str(tmp_path / "full")])
    assert err.endswith("holds only an encoder (XLNetModel); export it with --encoder-only")
    assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "enc"),
                     "--encoder-only"]) == 0
    assert_state_dicts_equal(model, load_clean(transformers.XLNetModel, tmp_path / "enc"))


def test_bad_folders_are_refused_with_one_line(round_trip, tmp_path, capsys):
    """Missing tensor, a config of another depth, an untied or absent head, another family: exit 2, nothing written."""
    good = round_trip[0] / "out"

    def variant(name, config_changes=None, tensors=None):
        return folder_variant(good, tmp_path / name, config_changes, tensors)

    def import_hf(folder, *flags):
        return cli_refusal(capsys, tmp_path / "run", ["import-hf", "--hf", str(folder), "--out",
                                                      str(tmp_path / "run"), *flags])

    err = import_hf(variant("missing", tensors=lambda t: {k: v for k, v in t.items() if k != "transformer.mask_emb"}))
    assert "model.safetensors: tensor 'transformer.mask_emb' is missing (expected shape (1, 1, 32)" in err
    err = import_hf(variant("deeper", {"n_layer": 3}))
    assert "tensor 'transformer.layer.2.rel_attn.q' is missing" in err and "n_layer=3" in err
    err = import_hf(variant("untied", tensors=lambda t: {**t, "lm_loss.weight": np.ones((37, 32), np.float32)}))
    assert "tensor 'lm_loss.weight' differs from 'transformer.word_embedding.weight'; untied output layers" in err
    err = import_hf(variant("no_head", {"tie_word_embeddings": False}))
    assert "tie_word_embeddings is false but tensor 'lm_loss.weight' is missing" in err
    err = import_hf(good, "--family", "transfo_xl")
    assert "holds a XLNetLMHeadModel (xlnet family) model, not a transfo_xl model" in err
    err = cli_refusal(capsys, tmp_path / "hf", ["export-hf", "--checkpoint", str(round_trip[0] / "run"), "--out",
                                                str(tmp_path / "hf"), "--family", "bert"])
    assert "not a bert model" in err


def test_a_folder_whose_tokenizer_has_other_ids_is_refused(round_trip, tmp_path, capsys):
    """Our exported spiece.model passes; one with two residues swapped (another residue order) is refused."""
    good = round_trip[0] / "out"
    assert model_io.load_model(good).architecture == LM  # its own spiece.model agrees with our table
    swapped = folder_variant(good, tmp_path / "swapped")
    proto = xlnet_alphabet.sentencepiece_model_proto()
    a, b = xlnet_alphabet.FIRST_RESIDUE_ID, xlnet_alphabet.FIRST_RESIDUE_ID + 1
    proto.pieces[a].piece, proto.pieces[b].piece = proto.pieces[b].piece, proto.pieces[a].piece
    (swapped / "spiece.model").write_bytes(proto.SerializeToString())
    err = cli_refusal(capsys, tmp_path / "run", ["import-hf", "--hf", str(swapped), "--out", str(tmp_path / "run")])
    first, second = xlnet_alphabet.RESIDUE_ORDER[:2]
    assert "spiece.model: this tokenizer's ids differ from ProtXLNet's" in err
    assert f"piece '▁{first}': id {b}, ours {a}" in err and f"piece '▁{second}': id {a}, ours {b}" in err
