"""SeqIO tasks end to end: masking rates on the real demo corpus, exact example structure, seeds, errors."""

import numpy as np
import pytest
import seqio

import prottrans_jax_tasks
from binomial import assert_binomial_rate, exact_fraction_count
from prottrans_jax import alphabet, pipeline
from prottrans_jax.vocab import ProtBertVocabulary, ProtT5Vocabulary

T5_SENTINEL0 = alphabet.prot_t5_sentinel_id(0)
T5_RESIDUES = (3, 28)  # ProtT5 residue ids are 3..27
BERT_MASK = alphabet.PROT_BERT_MASK_ID


def _is_t5_residue(ids):
    return (ids >= T5_RESIDUES[0]) & (ids < T5_RESIDUES[1])


@pytest.fixture(scope="module")
def real_tasks(demo_corpus):
    return prottrans_jax_tasks.register_fasta_tasks("realdemo", str(demo_corpus), validation_fraction=0.0)


def _all_batches(task, length=512, batch_size=256, seed=0, **kw):
    ds = pipeline.get_dataset(task, length=length, batch_size=batch_size, seed=seed, num_epochs=1, **kw)
    batches = list(pipeline.numpy_batches(ds))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


# ---------------------------------------------------------------------------------------
# Masking rates over the whole real demo corpus (14,400 proteins, cropped to 512).
# ---------------------------------------------------------------------------------------


def test_prot_t5_denoise_rates(real_tasks):
    ex = _all_batches("realdemo_prot_t5_denoise")
    inputs, targets = ex["encoder_input_tokens"], ex["decoder_target_tokens"]
    assert len(inputs) > 14_000
    residue = _is_t5_residue(targets)
    sentinel = (inputs == T5_SENTINEL0) & residue
    randomised = (inputs != targets) & ~sentinel & residue
    assert _is_t5_residue(inputs[randomised]).all(), "random replacements must be residues"
    # Exactly 15% of each cropped protein is selected; of those, 90% -> sentinel and 10% -> one of the 20
    # standard residues at random (which is the original one time in 20 when the original is standard).
    selected = exact_fraction_count(residue.sum(1), 0.15)
    standard = np.isin(targets[residue], ProtT5Vocabulary().residue_ids).mean()
    assert_binomial_rate(sentinel.sum(), selected, 0.9, "sentinel")
    assert_binomial_rate(randomised.sum(), selected, 0.1 * (1 - standard / 20), "random residue")
    assert_binomial_rate(selected - sentinel.sum() - randomised.sum(), selected, 0.1 * standard / 20,
                         "selected but unchanged")


def test_span_corruption_rates(real_tasks):
    lengths = pipeline.default_feature_lengths("span_corruption", 512)
    ex = _all_batches("realdemo_span_corruption")
    inputs, targets = ex["encoder_input_tokens"], ex["decoder_target_tokens"]
    assert inputs.shape[1] == 512 and targets.shape[1] == lengths["targets"]
    noise = _is_t5_residue(targets).sum(1)
    kept = _is_t5_residue(inputs).sum(1)
    spans = (targets > 27).sum(1)  # one sentinel per noise span in the targets
    # T5's arithmetic (in float32, as the preprocessor): round(15%) noise tokens, kept within [1, length - 1],
    # in round(noise / 3) spans, exactly, for every cropped protein.
    assert noise.sum() == exact_fraction_count(noise + kept, 0.15, np.float32, keep_one_out=True)
    np.testing.assert_array_equal(spans, np.maximum(np.round(noise.astype(np.float32) / np.float32(3.0)), 1))
    # Inputs hold the same number of sentinels as targets, per example.
    np.testing.assert_array_equal((inputs > 27).sum(1), spans)


@pytest.mark.parametrize(
    "objective,mask_rate,random_rate", [("bert_mlm", 0.8, 0.1), ("electra", 0.85, 0.0)]
)
def test_mlm_rates_and_weights(real_tasks, objective, mask_rate, random_rate):
    ex = _all_batches(f"realdemo_{objective}")
    inputs, targets, weights = ex["encoder_input_tokens"], ex["encoder_target_tokens"], ex["encoder_loss_weights"]
    residue = targets >= 5
    selected = weights.astype(bool)
    assert not (selected & ~residue).any(), "loss weights only on residues, never on [CLS]/[SEP]/pad"
    assert (inputs[~selected] == targets[~selected]).all(), "unselected positions are untouched"
    n = selected.sum()
    assert n == exact_fraction_count(residue.sum(1), 0.15), "exactly 15% of each cropped protein"
    masked = (inputs == BERT_MASK) & selected
    randomised = (inputs != targets) & ~masked & selected
    kept = (inputs == targets) & selected
    # A random pick is one of the 20 standard residues: the original one time in 20 when that is standard.
    random_changes = random_rate * (1 - np.isin(targets[selected], ProtBertVocabulary().residue_ids).mean() / 20)
    assert_binomial_rate(masked.sum(), n, mask_rate, "[MASK]")
    if random_rate:
        assert_binomial_rate(randomised.sum(), n, random_changes, "random residue")
    else:
        assert not randomised.any()
    # Weighted positions include kept ones (what seqio's EncoderFeatureConverter would miss).
    assert_binomial_rate(kept.sum(), n, 1 - mask_rate - random_changes, "kept")


# ---------------------------------------------------------------------------------------
# Exact structure on hand-checked cases.
# ---------------------------------------------------------------------------------------

SEQ = "MKVLAAGIVGLLLAWDEQ"  # 18 residues


@pytest.fixture()
def tiny_tasks(tmp_path):
    path = tmp_path / "one.fasta"
    path.write_text(f">p1 test\n{SEQ[:10]}\n{SEQ[10:].lower()}\n")
    return prottrans_jax_tasks.register_fasta_tasks("tiny", str(path), validation_fraction=0.0)


def test_prot_t5_denoise_structure(tiny_tasks):
    ex = _all_batches("tiny_prot_t5_denoise", length=32, batch_size=1)
    inputs, targets = ex["encoder_input_tokens"][0], ex["decoder_target_tokens"][0]
    expected = ProtT5Vocabulary().encode(SEQ) + [alphabet.PROT_T5_EOS_ID]
    assert targets.tolist() == expected + [0] * (32 - len(expected))
    assert inputs[len(SEQ)] == alphabet.PROT_T5_EOS_ID and (inputs[len(SEQ) + 1 :] == 0).all()
    changed = inputs[: len(SEQ)] != targets[: len(SEQ)]
    assert 1 <= changed.sum() <= round(0.15 * len(SEQ))  # 3 selected; a random pick may equal the original
    assert all(i == T5_SENTINEL0 or 3 <= i < 28 for i in inputs[: len(SEQ)][changed])
    # Decoder inputs are the targets shifted right behind the start token 0.
    assert ex["decoder_input_tokens"][0].tolist()[: len(SEQ) + 1] == [0] + expected[:-1]


def test_span_corruption_structure_reconstructs_the_sequence(tiny_tasks):
    for seed in range(5):
        ex = _all_batches("tiny_span_corruption", length=32, batch_size=1, seed=seed)
        inputs = [int(i) for i in ex["encoder_input_tokens"][0] if i]
        targets = [int(i) for i in ex["decoder_target_tokens"][0] if i]
        assert inputs[-1] == targets[-1] == alphabet.PROT_T5_EOS_ID
        sentinels = [i for i in inputs if i > 27]
        assert sentinels == list(range(127, 127 - len(sentinels), -1)), "distinct sentinels, in order"
        # Put each target span back where its sentinel stands in the inputs.
        spans, current = {}, None
        for t in targets[:-1]:
            if t > 27:
                current = t
                spans[current] = []
            else:
                spans[current].append(t)
        rebuilt = []
        for i in inputs[:-1]:
            rebuilt.extend(spans[i] if i > 27 else [i])
        assert rebuilt == ProtT5Vocabulary().encode(SEQ)


def test_bert_mlm_structure(tiny_tasks):
    ex = _all_batches("tiny_bert_mlm", length=32, batch_size=1)
    vocab = ProtBertVocabulary()
    inputs, targets, weights = (ex[k][0] for k in ("encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights"))
    expected = [vocab.cls_id] + vocab.encode(SEQ) + [vocab.sep_id]
    assert targets.tolist() == expected + [0] * (32 - len(expected))
    assert inputs[0] == vocab.cls_id and inputs[len(SEQ) + 1] == vocab.sep_id
    assert (inputs[len(SEQ) + 2 :] == 0).all()
    assert weights.sum() == round(0.15 * len(SEQ)) and weights[0] == 0 and weights[len(SEQ) + 1] == 0


def test_long_sequences_are_cropped_to_a_window(tmp_path):
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list(alphabet.STANDARD_RESIDUES), 3000))
    (tmp_path / "long.fa").write_text(f">long\n{seq}\n")
    prottrans_jax_tasks.register_fasta_tasks("long", str(tmp_path / "long.fa"), validation_fraction=0.0)
    full = ProtT5Vocabulary().encode(seq)
    windows = set()
    for seed in range(4):
        targets = _all_batches("long_prot_t5_denoise", length=64, batch_size=1, seed=seed)["decoder_target_tokens"][0]
        window = targets[:63].tolist()
        assert targets[63] == alphabet.PROT_T5_EOS_ID
        start = next(i for i in range(len(full) - 62) if full[i : i + 63] == window)
        windows.add(start)
    assert len(windows) > 1, "crop offsets vary with the seed"


def test_packing_gives_segments(real_tasks):
    ds = pipeline.get_dataset("realdemo_bert_mlm", length=512, batch_size=4, seed=0, num_epochs=1, pack=True)
    batch = next(pipeline.numpy_batches(ds))
    seg = batch["encoder_segment_ids"]
    assert seg.max() > 1, "short proteins are packed several to a row"
    # Every packed segment starts with [CLS] at position 0.
    starts = (batch["encoder_positions"] == 0) & (seg > 0)
    assert (batch["encoder_target_tokens"][starts] == alphabet.PROT_BERT_CLS_ID).all()
    assert (batch["encoder_loss_weights"][seg == 0] == 0).all()


# ---------------------------------------------------------------------------------------
# Seeds, splits, errors.
# ---------------------------------------------------------------------------------------


def _first(task, seed, n=3):
    ds = pipeline.get_dataset(task, length=128, batch_size=8, seed=seed, num_epochs=1)
    key = "decoder_input_tokens" if pipeline.objective_of(task) == "txl_causal_lm" else "encoder_input_tokens"
    return [b[key] for b in pipeline.numpy_batches(ds.take(n))]


@pytest.mark.parametrize("objective", prottrans_jax_tasks.OBJECTIVES)
def test_same_seed_same_examples(real_tasks, objective):
    a, b, c = (_first(f"realdemo_{objective}", s) for s in (1, 1, 2))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any((x != z).any() for x, z in zip(a, c))


def test_validation_split_is_disjoint_and_small(demo_corpus):
    prottrans_jax_tasks.register_fasta_tasks("splitdemo", str(demo_corpus), validation_fraction=0.02)
    task = seqio.get_mixture_or_task("splitdemo_prot_t5_denoise")
    ids = {
        s: np.concatenate([b["id"] for b in task.source.get_dataset(split=s, shuffle=False).batch(4096).as_numpy_iterator()])
        for s in ("train", "validation")
    }
    assert not set(ids["train"]) & set(ids["validation"])
    frac = len(ids["validation"]) / (len(ids["train"]) + len(ids["validation"]))
    assert abs(frac - 0.02) < 0.006


def test_malformed_fasta_gives_one_clear_error(tmp_path):
    path = tmp_path / "bad.fasta"
    path.write_text(">ok\nMKV\n>broken\nMK1V\n")
    prottrans_jax_tasks.register_fasta_tasks("bad", str(path), validation_fraction=0.0)
    ds = pipeline.get_dataset("bad_prot_t5_denoise", length=32, batch_size=1, num_epochs=1)
    with pytest.raises(pipeline.DataPipelineError) as err:
        list(pipeline.numpy_batches(ds))
    msg = str(err.value)
    assert "bad.fasta" in msg and "line 4" in msg and "broken" in msg and "Traceback" not in msg


def test_missing_corpus_and_unknown_task_errors(tmp_path):
    prottrans_jax_tasks.register_fasta_tasks("gone", str(tmp_path / "nothing_*.fasta"))
    with pytest.raises(ValueError, match="nothing_"):
        pipeline.get_dataset("gone_bert_mlm", length=32)
    with pytest.raises(ValueError, match="registered tasks"):
        pipeline.get_dataset("no_such_task_bert_mlm")
    with pytest.raises(ValueError, match="PROTTRANS_JAX_UNIREF50_FASTA"):
        pipeline.get_dataset("uniref50_bert_mlm", length=32)
