"""embed with ProtXLNet and ProtTXL: transformers parity, residue positions, segments with memory, the memory bound."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch  # noqa: E402  (a test requirement: a broken install fails, never skips)
import transformers  # noqa: E402

from embed_fixtures import read_h5
from hf_loading import load_clean
from model_dirs import write_fasta, write_model_dir
from proteins import read_proteins
from prottrans_jax import alphabet, cli, embed, model_io, xlnet_alphabet
from prottrans_jax.embedding import encoder, h5_store, limits
from prottrans_jax.embedding.encoder import Embedder
from prottrans_jax.hf import xlnet_map
from prottrans_jax.models import configs
from prottrans_jax.models.transfo_xl import TransfoXLModel

TOL = 1e-4


def _embed(model, records, out, **kwargs):
    fasta_path = write_fasta(out.with_suffix(".fa"), records)
    summary = embed.embed_fasta(model, fasta_path, out, per_residue=True, per_protein=True, progress=False, **kwargs)
    residues, attrs, dataset_attrs = read_h5(out)
    pooled = read_h5(out.with_name(f"{out.stem}.per_protein.h5"))[0]
    return summary, residues, pooled, attrs, dataset_attrs


def _encoder_params(params):
    return {k: v for k, v in params.items() if k != "lm_bias"}


@pytest.fixture(scope="module")
def proteins(demo_corpus):
    """Real proteins of 40-400 residues (one 512-token segment each), some with rare residues (X)."""
    seqs = [alphabet.normalize_sequence(s) for s in read_proteins(demo_corpus, 400)]
    return [s for s in seqs if 40 <= len(s) <= 400]


@pytest.fixture(scope="module")
def xlnet(tmp_path_factory):
    """A tiny ProtXLNet training directory (random weights) and the same weights as a HF XLNetModel folder."""
    root = tmp_path_factory.mktemp("xlnet")
    config, params = write_model_dir(root / "run", "xlnet")
    hf_dir = xlnet_map.export_hf("XLNetModel", config, params, root / "hf")
    return root / "run", hf_dir, config


@pytest.fixture(scope="module")
def txl(tmp_path_factory):
    path = tmp_path_factory.mktemp("txl") / "run"
    config, params = write_model_dir(path, "transfo_xl")
    return path, config, _encoder_params(params)


# -- XLNet: parity with transformers ------------------------------------------------------------
def _hf_xlnet(hf_dir, **overrides):
    return load_clean(transformers.XLNetModel, hf_dir, **overrides)


def _hf_batch(hf_dir, seqs, layer=None):
    """transformers' XLNetModel on one left-padded batch of ``seqs`` as ProtTrans feeds it: (states, padded length)."""
    ids, mask = xlnet_alphabet.pad_left([xlnet_alphabet.encode_for_model(s) for s in seqs])
    assert (mask == 0).any() and (ids[:, -2:] == [xlnet_alphabet.SEP_ID, xlnet_alphabet.CLS_ID]).all()
    with torch.no_grad():
        out = _hf_xlnet(hf_dir)(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                                output_hidden_states=True)
    return (out.last_hidden_state if layer is None else out.hidden_states[layer]).numpy(), ids.shape[1]


def test_xlnet_matches_transformers_batched_with_left_padding(xlnet, proteins, tmp_path):
    """As ProtTrans embeds with ProtXLNet: one left-padded batch, residues [T - n - 2, T - 2), mean of those."""
    run, hf_dir, _ = xlnet
    chosen = proteins[:5] + [next(s for s in proteins if "X" in s)]  # X is <unk> for ProtXLNet
    assert len({len(s) for s in chosen}) == 6
    records = {f"p{i}": s for i, s in enumerate(chosen)}
    summary, residues, pooled, attrs, _ = _embed(run, records, tmp_path / "x.h5", max_sequences_per_batch=8)
    assert summary.embedded == 6 and summary.compiled_shapes == 1  # one batch of 8 rows over the 8 devices
    states, width = _hf_batch(hf_dir, chosen)  # padded to the longest, ours to its bucket: padding is masked
    for i, seq in enumerate(chosen):
        ref = states[i, width - len(seq) - 2:width - 2]  # ProtTrans' slice: <sep> <cls> and padding dropped
        assert residues[f"p{i}"].shape == (len(seq), 32)
        assert np.abs(residues[f"p{i}"] - ref).max() < TOL
        assert np.abs(pooled[f"p{i}"] - ref.mean(axis=0)).max() < TOL
    assert attrs["layer"] == 2


def _hf_segments(model, tokens, segment):
    """HF XLNetModel on one unpadded protein, segment by segment carrying ``mems`` (the first segment the short one)."""
    first = len(tokens) % segment or segment
    bounds = [0] + list(range(first, len(tokens) + 1, segment))
    mems, states = None, []
    with torch.no_grad():
        for start, end in zip(bounds, bounds[1:]):
            out = model(input_ids=torch.tensor([tokens[start:end]], dtype=torch.long), mems=mems, use_mems=True)
            mems = out.mems
            states.append(out.last_hidden_state[0].numpy())
    assert len(states) == -(-len(tokens) // segment)
    return np.concatenate(states)


def test_xlnet_long_proteins_run_as_segments_with_memory_like_transformers(xlnet, proteins, tmp_path):
    """32-token segments, memory 48: each protein equals transformers fed its segments in order with ``mems``,
    whatever else shares its batch (padding is masked in the memory too), and none is refused."""
    run, hf_dir, _ = xlnet
    seqs = {"long": proteins[0][:150], "mid": proteins[1][:70], "short": proteins[2][:20]}
    summary, residues, pooled, attrs, _ = _embed(run, seqs, tmp_path / "seg.h5", segment_length=32,
                                                 memory_length=48, max_sequences_per_batch=4)
    assert summary.compiled_shapes == 1 and not summary.chunked and not summary.skipped_too_long  # one batch
    assert (attrs["segment_length"], attrs["memory_length"]) == (32, 48)
    model = _hf_xlnet(hf_dir, mem_len=48)
    for name, seq in seqs.items():
        ref = _hf_segments(model, xlnet_alphabet.encode_for_model(seq), 32)[:len(seq)]
        assert residues[name].shape == (len(seq), 32)
        assert np.abs(residues[name] - ref).max() < TOL, name
        assert np.abs(pooled[name] - ref.mean(axis=0)).max() < TOL, name
    # the segments matter: in one segment the long protein's residues differ
    whole = _hf_segments(model, xlnet_alphabet.encode_for_model(seqs["long"]), 512)[:150]
    assert np.abs(residues["long"] - whole).max() > 1e-2


def test_xlnet_file_layout_layer_and_refused_resume(xlnet, proteins, tmp_path):
    """The ProtTrans layout of the other families; --layer as for them; a re-run skips what is done; a re-run
    with other segments is refused."""
    run, hf_dir, config = xlnet
    records = {"sp|Q1.2": proteins[5][:50], "x.y": proteins[4][:45]}
    _, residues, pooled, attrs, dataset_attrs = _embed(run, records, tmp_path / "e.h5", segment_length=64, layer=1)
    states, width = _hf_batch(hf_dir, list(records.values()), layer=1)
    assert np.abs(residues["x_y"] - states[1, width - 47:width - 2]).max() < TOL and attrs["layer"] == 1
    assert sorted(residues) == sorted(pooled) == ["sp|Q1_2", "x_y"]
    assert residues["sp|Q1_2"].shape == (50, 32) and pooled["x_y"].shape == (32,)
    assert dataset_attrs["x_y"]["original_id"] == "x.y" and dataset_attrs["x_y"]["length"] == 45
    assert attrs["architecture"] == "XLNetLMHeadModel" and attrs["hidden_size"] == 32
    assert (attrs["segment_length"], attrs["memory_length"]) == (64, config.mem_len)
    fasta_path = tmp_path / "e.fa"
    again = embed.embed_fasta(run, fasta_path, tmp_path / "e.h5", per_residue=True, per_protein=True,
                              progress=False, segment_length=64, layer=1)
    assert (again.embedded, again.already_done) == (0, 2)
    with pytest.raises(h5_store.OutputMismatchError, match="segment_length: 64 there vs 32 now"):
        embed.embed_fasta(run, fasta_path, tmp_path / "e.h5", per_residue=True, per_protein=True, progress=False,
                          segment_length=32, layer=1)


# -- Transformer-XL: memory ---------------------------------------------------------------------
@functools.cache
def _txl_apply(config):
    module = TransfoXLModel(config)
    return jax.jit(lambda params, ids, mems: module.apply({"params": params}, ids, mems=mems))


def _txl_reference(config, params, seq, segment, memory, carry=True):
    """Our TransfoXLModel on ``[CLS] residues [SEP]`` alone, in segments from the first token, carrying memory
    (``carry=False``: every segment alone)."""
    ids = [alphabet.PROT_BERT_CLS_ID] + [alphabet.prot_bert_residue_ids()[c] for c in seq] + [alphabet.PROT_BERT_SEP_ID]
    ids += [alphabet.PROT_BERT_PAD_ID] * (-len(ids) % segment)  # trailing padding: causal, so it changes nothing
    apply = _txl_apply(config.replace(mem_len=memory))
    mems, states = None, []
    for start in range(0, len(ids), segment):
        out = apply(params, jnp.asarray([ids[start:start + segment]]), mems)
        mems = out.mems if carry else None
        states.append(np.asarray(out.last_hidden_state[0]))
    return np.concatenate(states)[1:len(seq) + 1]  # [CLS] and [SEP] dropped


def test_txl_memory_that_covers_the_protein_equals_one_segment(txl, proteins, tmp_path):
    """Causal attention with memory: 16-token segments with memory 200 give what one segment gives (exactly up to
    float rounding); with memory 16 each segment sees 16 tokens back (as the model fed its segments in order)."""
    run, config, params = txl
    seqs = {"a": proteins[0][:100], "b": proteins[1][:61], "c": proteins[2][:9]}
    whole = _embed(run, seqs, tmp_path / "whole.h5")
    covered = _embed(run, seqs, tmp_path / "covered.h5", segment_length=16, memory_length=200)
    short = _embed(run, seqs, tmp_path / "short.h5", segment_length=16, memory_length=16)
    assert whole[0].compiled_shapes == covered[0].compiled_shapes == 1  # "c" shares the batch of 7-segment rows
    assert whole[3]["segment_length"] == 512 and covered[3]["memory_length"] == 200
    for name, seq in seqs.items():
        one_segment = _txl_reference(config, params, seq, 128, 16)
        assert whole[1][name].shape == (len(seq), 32)
        assert np.abs(whole[1][name] - one_segment).max() < 1e-5  # [CLS] and [SEP] dropped, right padding
        assert np.abs(covered[1][name] - whole[1][name]).max() < 1e-5
        assert np.abs(covered[2][name] - whole[2][name]).max() < 1e-5
        assert np.abs(short[1][name] - _txl_reference(config, params, seq, 16, 16)).max() < 1e-5
        alone = _txl_reference(config, params, seq, 16, 16, carry=False)  # memory-less segments
        assert np.abs(alone[:15] - whole[1][name][:15]).max() < 1e-5  # the first segment has no past anyway
        if len(seq) > 15:
            assert np.abs(alone[15:] - covered[1][name][15:]).max(axis=1).min() > 1e-4  # later ones differ
    # memory 16 covers one segment back: residues of tokens 1-31 see all they would, from token 32 on they do not
    gap = np.abs(short[1]["a"] - whole[1]["a"]).max(axis=1)  # [residues]
    assert gap[:31].max() < 1e-5 and gap[31:].min() > 1e-4


# -- memory bound, options ----------------------------------------------------------------------
def test_segments_are_planned_under_the_per_segment_memory_bound(txl, monkeypatch):
    """A 5,000-residue protein is planned as 64-token segments (not refused); every batch's bound, taken per segment
    (queries x (segment + memory) keys), stays within the one the longest row needs; a segment too large is refused."""
    run, config, _ = txl
    loaded = model_io.load_model(run)
    embedder = Embedder(loaded, devices=jax.local_devices()[:2], segment_length=64, memory_length=128)
    lengths = [5000, 900, 300, 60, 60, 10]
    units = [embed._Unit(i, 0, n, 0, n) for i, n in enumerate(lengths)]
    plan = embed.plan_batches(embedder, units, max(lengths), 4000, 100, 4)
    top = max(b.padded_length for b in plan)
    assert top % 64 == 0 and 5002 <= top < 1.125 * 5002 + 64  # whole segments, padding within 12.5%
    bound = dict(segment=64, memory=128)
    promised = limits.peak_bytes(embedder.config, top, 4, embedder.rows_per_memory(2), **bound)
    assert sorted(i for b in plan for i in b.indices) == list(range(len(lengths)))
    for b in plan:
        assert b.padded_length <= 64 or b.padded_length % 64 == 0
        assert limits.peak_bytes(embedder.config, b.padded_length, 4, embedder.rows_per_memory(b.rows),
                                 **bound) <= promised
    assert promised < limits.peak_bytes(embedder.config, 5002, 4, 2) / 10  # far below 5,002-token rows whole
    monkeypatch.setenv(limits.AVAILABLE_MEMORY_ENV, str(int(promised)))
    with pytest.raises(ValueError, match="--segment-length 4096 with --mem-len 128: one segment needs"):
        embed._check_segment_fits(Embedder(loaded, devices=jax.local_devices()[:1], segment_length=4096,
                                           memory_length=128), 4)


def test_segment_options_are_refused_for_other_families_and_bad_values(txl, tmp_path, capsys, proteins):
    with pytest.raises(ValueError, match="--segment-length and --mem-len apply to ProtXLNet and ProtTXL only"):
        encoder._segmentation("t5", configs.get_config("prot_t5_tiny"), 64, None)
    fasta_path = write_fasta(tmp_path / "in.fa", {"a": proteins[0][:30]})
    args = ["embed", "--model", str(txl[0]), "--fasta", str(fasta_path), "--out", str(tmp_path / "o.h5"),
            "--no-progress"]
    for bad, said in [("--mem-len=0", "--mem-len 0: the memory must hold at least 1 token"),
                      ("--segment-length=-3", "--segment-length -3: a segment must hold at least 1 token")]:
        assert cli.main([*args, bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0]
    assert not list(tmp_path.glob("o.h5*"))
