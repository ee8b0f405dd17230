"""prottrans-jax score: every method equals its definition computed the slow way; the table; a trained model."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from generation_models import TINY_LM_CONFIGS, quick_params, write_lm_dir
from model_dirs import write_fasta
from prottrans_jax import cli, fasta
from prottrans_jax.generation import lm as lm_module, scoring, tokens
from prottrans_jax.generation.permutation import left_to_right_perm_mask
from prottrans_jax.models import configs
from prottrans_jax.models.electra import ElectraPretrainingModel

PROTEINS = ["MKTAYIAKQR", "GSHMLE", "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTK"]


def tiny_lm(family: str, config=None, seed: int = 0) -> lm_module.LanguageModel:
    config = config or configs.get_config(TINY_LM_CONFIGS[family])
    params = jax.tree_util.tree_map(jnp.asarray, quick_params(config, seed))
    module = configs.build_model(config)
    arch = "ElectraPretrainingModel" if family == "electra" else "test"
    return lm_module.LanguageModel(family, arch, config, module, params,
                                   tokens.framing(family, lm_module._vocab_size(config)), "tiny")


def token_log_probs(logits, ids) -> float:
    """Sum over rows of ``log_softmax(logits[r])[ids[r]]``."""
    picked = jnp.take_along_axis(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32)), jnp.asarray(ids)[:, None], 1)
    return float(jnp.sum(picked))


def causal_reference(lm, seq: str) -> float:
    """One plain forward pass over ``[CLS] residues [SEP]``: sum of log p(token | all tokens before)."""
    ids = np.concatenate([lm.framing.context, lm.framing.encode(seq), [lm.framing.end_id]])
    logits = jax.jit(lambda x: lm.module.apply({"params": lm.params}, x).logits)(jnp.asarray(ids[None, :-1]))[0]
    return token_log_probs(logits, ids[1:])


def test_causal_score_is_the_full_forward_sum_alone_or_batched():
    lm = tiny_lm("transfo_xl")
    got = scoring.score_sequences(lm, PROTEINS[:2], batch_size=2)  # two lengths, one padded batch
    want = [causal_reference(lm, s) for s in PROTEINS[:2]]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert abs(got[0] - got[1]) > 1  # distinct proteins, distinct scores


def test_causal_score_carries_memory_across_segments():
    """A 42-token protein read in segments of 8: with memory holding every earlier token it equals one pass;
    with the model's own 16-token memory it is Transformer-XL's windowed likelihood (and differs)."""
    wide = tiny_lm("transfo_xl", configs.get_config("prot_txl_tiny").replace(mem_len=64))
    long_protein = PROTEINS[2]
    segmented = scoring.score_sequences(wide, [long_protein], segment_length=8)[0]
    assert abs(segmented - causal_reference(wide, long_protein)) < 1e-4
    short_memory = tiny_lm("transfo_xl")  # mem_len 16, the same weights
    windowed = scoring.score_sequences(short_memory, [long_protein], segment_length=8)[0]
    assert abs(windowed - segmented) > 1e-3


def test_permutation_score_is_the_left_to_right_likelihood_one_target_at_a_time():
    """Reference: for each token t a separate pass where t and every later token are hidden from t's query
    stream (``perm_mask``), which alone predicts (``target_mapping`` one-hot at t), as in XLNet's recipe."""
    lm = tiny_lm("xlnet")
    got = scoring.score_sequences(lm, PROTEINS[:2], batch_size=2)

    @jax.jit
    def one_target(ids, t):  # [1, L], scalar -> [vocab] logits at position t
        target = jax.nn.one_hot(jnp.reshape(t, (1, 1)), ids.shape[1])  # [1, 1, L]
        out = lm.module.apply({"params": lm.params}, ids, perm_mask=left_to_right_perm_mask(1, ids.shape[1]),
                              target_mapping=target)
        return out.logits[0, 0]

    for seq, score in zip(PROTEINS[:2], got):
        ids = np.concatenate([lm.framing.context, lm.framing.encode(seq), [lm.framing.end_id]])
        positions = range(len(lm.framing.context), len(ids))
        logits = [one_target(jnp.asarray(ids[None]), t) for t in positions]
        assert abs(score - token_log_probs(jnp.stack(logits), ids[len(lm.framing.context):])) < 1e-4


def mlm_reference(lm, seq: str) -> float:
    """Each residue masked alone, one pass each, under the MLM head."""
    frame = lm.framing
    ids = np.concatenate([frame.context, frame.encode(seq), [frame.end_id]])
    method = ElectraPretrainingModel.generator_logits if isinstance(lm.module, ElectraPretrainingModel) else None
    apply = jax.jit(lambda x: lm.module.apply({"params": lm.params}, x, **({"method": method} if method else {})))
    positions = range(len(frame.context), len(ids) - 1)
    logits = []
    for i in positions:
        masked = ids.copy()
        masked[i] = frame.mask_id
        logits.append(apply(jnp.asarray(masked[None]))[0, i])
    return token_log_probs(jnp.stack(logits), ids[len(frame.context):-1])


@pytest.mark.parametrize("family", ["bert", "electra"])
def test_mlm_pseudo_likelihood_masks_each_residue_in_turn(family):
    lm = tiny_lm(family)
    got = scoring.score_sequences(lm, PROTEINS[:2], batch_size=4)  # rows of both proteins share calls
    np.testing.assert_allclose(got, [mlm_reference(lm, s) for s in PROTEINS[:2]], atol=1e-4)


def test_t5_denoising_score_reconstructs_each_sentinel_masked_residue():
    lm = tiny_lm("t5")
    got = scoring.score_sequences(lm, PROTEINS[:2], batch_size=5)
    frame = lm.framing
    apply = jax.jit(lambda enc, dec_in, target: lm.module.apply({"params": lm.params}, enc, dec_in, target,
                                                                enable_dropout=False))
    for seq, score in zip(PROTEINS[:2], got):
        target = np.append(frame.encode(seq), frame.end_id)
        dec_in = np.concatenate([[0], target[:-1]])
        logits = []
        for i in range(len(seq)):
            enc = target.copy()
            enc[i] = frame.mask_id  # <extra_id_0>, as ProtT5's denoising pretraining
            logits.append(apply(jnp.asarray(enc[None]), jnp.asarray(dec_in[None]), jnp.asarray(target[None]))[0, i])
        assert abs(score - token_log_probs(jnp.stack(logits), target[:-1])) < 1e-4


# ---------------------------------------------------------------------------------------
# The command.
# ---------------------------------------------------------------------------------------
def test_score_cli_writes_the_documented_table_in_input_order(tmp_path, capsys):
    write_lm_dir(tmp_path / "run", "transfo_xl")
    records = {"b_second": PROTEINS[2], "a_first": "mktay-iakqr"}  # gaps and case normalised as everywhere
    src = write_fasta(tmp_path / "in.fa", records)
    out = tmp_path / "scores.tsv"
    assert cli.main(["score", "--model", str(tmp_path / "run"), "--fasta", str(src), "--out", str(out),
                     "--no-progress"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == list(scoring.COLUMNS)
    rows = [dict(zip(scoring.COLUMNS, line.split("\t"))) for line in lines[1:]]
    assert [r["id"] for r in rows] == ["b_second", "a_first"]
    assert [int(r["length"]) for r in rows] == [len(PROTEINS[2]), 10]
    for r in rows:
        ll, mean, n = float(r["log_likelihood"]), float(r["mean_log_likelihood"]), int(r["scored_tokens"])
        assert r["method"] == "causal" and n == int(r["length"]) + 1
        assert ll < 0 and abs(mean - ll / n) < 1e-5 and abs(float(r["perplexity"]) - math.exp(-mean)) < 1e-3
    lm = lm_module.load_language_model(str(tmp_path / "run"))
    assert abs(float(rows[1]["log_likelihood"]) - causal_reference(lm, "MKTAYIAKQR")) < 1e-3
    # An existing table is refused, and so is a malformed FASTA, each in one line, leaving files as they were.
    capsys.readouterr()
    assert cli.main(["score", "--model", str(tmp_path / "run"), "--fasta", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    bad = tmp_path / "bad.fa"
    bad.write_text(">x\nMK1V\n")
    assert cli.main(["score", "--model", str(tmp_path / "run"), "--fasta", str(bad), "--out",
                     str(tmp_path / "b.tsv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.fa" in err and "line 2" in err
    assert not (tmp_path / "b.tsv").exists() and out.read_text().splitlines() == lines


def test_score_refuses_an_encoder_without_its_head(tmp_path, capsys):
    write_lm_dir(tmp_path / "run", "t5")
    assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "enc"),
                     "--encoder-only"]) == 0
    src = write_fasta(tmp_path / "in.fa", {"a": "MKV"})
    capsys.readouterr()
    assert cli.main(["score", "--model", str(tmp_path / "enc"), "--fasta", str(src), "--out",
                     str(tmp_path / "s.tsv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "T5EncoderModel" in err and "language-model head" in err


# ---------------------------------------------------------------------------------------
# A briefly trained model prefers real proteins.
# ---------------------------------------------------------------------------------------
def train_tiny_txl(records, steps=200, batch=16, window=64, seed=0):
    """optax Adam (warm-up, cosine decay) on windows from each protein's start: ``[CLS]`` then residues."""
    config = configs.get_config("prot_txl_tiny").replace(mem_len=0)
    frame = tokens.framing("transfo_xl", config.vocab_size)
    module = configs.build_model(config)
    params = module.init(jax.random.key(seed), **module.dummy_inputs())["params"]
    if not steps:
        return lm_module.LanguageModel("transfo_xl", "TransfoXLLMHeadModel", config, module, params, frame, "init")
    opt = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 20, steps))
    opt_state = opt.init(params)

    @jax.jit
    def update(params, opt_state, ids):
        def loss(p):
            log_probs = jax.nn.log_softmax(module.apply({"params": p}, ids[:, :-1]).logits)
            targets = ids[:, 1:]
            picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
            weights = (targets != frame.pad_id).astype(jnp.float32)
            return -jnp.sum(picked * weights) / jnp.sum(weights)

        grads = jax.grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        chosen = [records[i] for i in rng.integers(len(records), size=batch)]
        ids = frame.framed([frame.encode(s[:window]) for s in chosen], window + 2)[:, :window + 1]
        params, opt_state = update(params, opt_state, jnp.asarray(ids))
    return lm_module.LanguageModel("transfo_xl", "TransfoXLLMHeadModel", config, module, params, frame, "trained")


def paired_gap(lm, real, shuffled):
    """Per protein, mean log-likelihood per token of the real minus the shuffled sequence; and its paired t."""
    counts = np.asarray([len(s) + 1 for s in real])
    gap = (scoring.score_sequences(lm, real, batch_size=32) - scoring.score_sequences(lm, shuffled, batch_size=32))
    gap = gap / counts
    return gap, gap.mean() / gap.std() * math.sqrt(len(gap))


def test_a_briefly_trained_txl_scores_real_proteins_above_the_same_proteins_shuffled(demo_corpus):
    """200 steps on the demo corpus (windows from each protein's start), then 60 held-out proteins (their
    first 150 residues) against the same residues shuffled. Measured: 0.03 nats per token better on ~90%
    of them (paired t ~5.4); the untrained network shows no such gap (|t| < 1). What the tiny model
    learns in that time is the residue distribution along the N-terminus (M first, then position-dependent
    composition): about half the gap remains with the first residue kept in place; order among residues
    far from the start is not learned this early (a gap of ~3e-5 nats per token)."""
    sequences = [r.sequence for r in itertools.islice(fasta.read_fasta(demo_corpus), 3000) if "X" not in r.sequence]
    train, held_out = sequences[:-64], sequences[-60:]
    rng = np.random.default_rng(1)
    real = [s[:150] for s in held_out]
    shuffled = ["".join(rng.permutation(list(s))) for s in real]
    untrained_gap, untrained_t = paired_gap(train_tiny_txl(train, steps=0), real, shuffled)
    gap, t = paired_gap(train_tiny_txl(train), real, shuffled)
    assert gap.mean() > 0.01 and t > 3 and (gap > 0).mean() > 0.75, (gap.mean(), t, (gap > 0).mean())
    assert abs(untrained_t) < 3 and abs(untrained_gap.mean()) < gap.mean() / 3, (untrained_gap.mean(), untrained_t)
