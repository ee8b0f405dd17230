"""prottrans-jax generate: cached decoding equals full recomputation, sampling filters, seeds, FASTA output."""

from __future__ import annotations

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from generation_models import TINY_LM_CONFIGS, quick_params, write_lm_dir
from prottrans_jax import alphabet, cli
from prottrans_jax.generation import generate, lm as lm_module, sampling, tokens
from prottrans_jax.generation.permutation import left_to_right_perm_mask
from prottrans_jax.models import configs

GENERATING = ("transfo_xl", "xlnet", "t5")
PROMPT = "MKTAY"


def tiny_lm(family: str, seed: int = 0) -> lm_module.LanguageModel:
    config = configs.get_config(TINY_LM_CONFIGS[family])
    params = jax.tree_util.tree_map(jnp.asarray, quick_params(config, seed))
    frame = tokens.framing(family, config.vocab_size)
    return lm_module.LanguageModel(family, "test", config, configs.build_model(config), params, frame, "tiny")


@pytest.fixture(scope="module", params=GENERATING)
def sampler(request):
    """One sampler per family (compiled once, shared): 14 residues at most, prompt included."""
    return generate.ProteinSampler(tiny_lm(request.param), sampling.SamplingSettings(), max_length=14, prompt=PROMPT,
                                   batch_size=3)


def full_logits(lm, sampler, fed):
    """``[batch, n + 1, vocab]``: the logits after the prefix and after each of the ``n`` tokens fed, by one pass."""
    batch, n = fed.shape
    prefix = jnp.broadcast_to(jnp.asarray(sampler.prefix), (batch, len(sampler.prefix)))
    seq = jnp.concatenate([prefix, fed], axis=1)  # [batch, P + n]
    p = len(sampler.prefix)
    variables = {"params": lm.params}
    if lm.family == "transfo_xl":
        return lm.module.apply(variables, seq).logits[:, p - 1:p + n]
    if lm.family == "xlnet":
        # every position from P on predicted in the left-to-right order; one more (dummy) token at the end
        seq = jnp.pad(seq, ((0, 0), (0, 1)))
        length = seq.shape[1]
        target = jnp.broadcast_to(jnp.eye(length)[p:], (batch, length - p, length))
        out = lm.module.apply(variables, seq, perm_mask=left_to_right_perm_mask(batch, length), target_mapping=target)
        return out.logits
    encoder_tokens = sampler.loop.decoder.encoder_tokens
    enc = jnp.broadcast_to(jnp.asarray(encoder_tokens), (batch, len(encoder_tokens)))
    logits = lm.module.apply(variables, enc, seq, jnp.where(seq == 0, 1, seq), enable_dropout=False)
    return logits[:, p - 1:p + n]


def test_incremental_decoding_equals_full_recomputation(sampler):
    """Step t's logits from the cache/memory equal a full forward pass over the prefix and the t tokens fed."""
    lm, decoder = sampler.lm, sampler.loop.decoder
    fed = np.random.default_rng(1).choice(lm.framing.standard_ids, size=(3, 8)).astype(np.int32)
    prefix = jnp.asarray(np.broadcast_to(sampler.prefix, (3, len(sampler.prefix))))
    state, logits = sampler.loop.start(lm.params, prefix)  # the compiled start the sampler uses
    step = jax.jit(decoder.step)
    cached = [np.asarray(logits)]
    for t in range(fed.shape[1]):
        state, logits = step(lm.params, state, jnp.asarray(fed[:, t]))
        cached.append(np.asarray(logits))
    reference = np.asarray(jax.jit(lambda f: full_logits(lm, sampler, f))(fed))
    np.testing.assert_allclose(np.stack(cached, axis=1), reference, atol=1e-5, rtol=0)
    assert np.abs(reference[:, 1:] - reference[:, :-1]).max() > 1e-3  # the logits do depend on the tokens fed


def test_same_seed_same_proteins_other_seed_others_only_protein_letters(sampler):
    first, again, other = (sampler.sample(5, seed) for seed in (3, 3, 4))
    assert [p.sequence for p in first] == [p.sequence for p in again]
    assert [p.log_likelihood for p in first] == [p.log_likelihood for p in again]
    assert [p.sequence for p in first] != [p.sequence for p in other]
    for p in first + other:
        assert p.sequence.startswith(PROMPT) and len(p.sequence) <= 14, p
        assert set(p.sequence) <= set(alphabet.STANDARD_RESIDUES), p
        assert p.ended or len(p.sequence) == 14
        assert p.log_likelihood < 0
    assert sampler.loop.traces == 1  # one compilation for every token of every batch


def test_repetition_penalty_makes_repeats_rarer():
    """With a strong penalty, residues already drawn are avoided: more distinct residues per protein."""
    lm = tiny_lm("transfo_xl")
    plain = generate.ProteinSampler(lm, sampling.SamplingSettings(), 20, batch_size=8).sample(8, 0)
    penalised = generate.ProteinSampler(lm, sampling.SamplingSettings(repetition_penalty=50.0), 20,
                                        batch_size=8).sample(8, 0)
    def distinct(ps):
        return np.mean([len(set(p.sequence)) / len(p.sequence) for p in ps])
    assert distinct(penalised) > distinct(plain) + 0.1


# ---------------------------------------------------------------------------------------
# The filters on a hand-made distribution.
# ---------------------------------------------------------------------------------------
LOGITS = jnp.log(jnp.asarray([[0.05, 0.4, 0.25, 0.15, 0.1, 0.05]]))
ALL = jnp.ones((1, 6), bool)
NONE_SEEN = jnp.zeros((1, 6), bool)


def kept(settings, allowed=ALL, seen=NONE_SEEN):
    return set(np.flatnonzero(np.isfinite(np.asarray(sampling.sampling_logits(LOGITS, allowed, seen, settings)[0]))))


def test_top_k_keeps_the_k_most_likely():
    assert kept(sampling.SamplingSettings(top_k=2)) == {1, 2}
    assert kept(sampling.SamplingSettings(top_k=3)) == {1, 2, 3}
    assert kept(sampling.SamplingSettings(top_k=0)) == set(range(6))


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert kept(sampling.SamplingSettings(top_p=0.35)) == {1}  # 0.4 reaches 0.35
    assert kept(sampling.SamplingSettings(top_p=0.5)) == {1, 2}  # 0.4 < 0.5 <= 0.65
    assert kept(sampling.SamplingSettings(top_p=0.7)) == {1, 2, 3}  # 0.65 < 0.7 <= 0.8


def test_filters_apply_to_allowed_tokens_only_and_sampling_follows_the_kept_distribution():
    allowed = jnp.asarray([[True, False, True, True, True, True]])  # the most likely id may not be drawn
    assert kept(sampling.SamplingSettings(top_k=2), allowed) == {2, 3}
    settings = sampling.SamplingSettings(top_k=2)
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = jax.vmap(lambda k: sampling.draw(k, LOGITS, allowed, NONE_SEEN, settings)[0][0])(keys)
    counts = np.bincount(np.asarray(draws), minlength=6)
    assert counts[[0, 1, 4, 5]].sum() == 0
    share = counts[2] / counts.sum()  # 0.25 / (0.25 + 0.15)
    assert abs(share - 0.625) < 4 * np.sqrt(0.625 * 0.375 / 4000)
    _, log_probs = sampling.draw(keys[0], LOGITS, allowed, NONE_SEEN, settings)  # the model's, unfiltered
    assert np.isclose(float(log_probs[0]), np.log([0.25, 0.15]), atol=1e-6).any()


def test_repetition_penalty_and_temperature_on_logits():
    logits = jnp.asarray([[2.0, -1.0, 0.5, 3.0]])
    seen = jnp.asarray([[True, True, False, False]])
    out = sampling.sampling_logits(logits, jnp.ones((1, 4), bool), seen,
                                   sampling.SamplingSettings(temperature=0.5, repetition_penalty=2.0))
    np.testing.assert_allclose(np.asarray(out[0]), [2.0, -4.0, 1.0, 6.0])  # (2/2, -1*2, 0.5, 3) / 0.5


@pytest.mark.parametrize("bad,message", [
    (dict(temperature=0.0), "--temperature"), (dict(top_k=-1), "--top-k"), (dict(top_p=0.0), "--top-p"),
    (dict(top_p=1.5), "--top-p"), (dict(repetition_penalty=0.0), "--repetition-penalty"),
])
def test_bad_settings_name_the_option(bad, message):
    with pytest.raises(ValueError, match=message):
        sampling.SamplingSettings(**bad)


# ---------------------------------------------------------------------------------------
# The command.
# ---------------------------------------------------------------------------------------
HEADER = re.compile(r"^>gen_(\d+) length=(\d+) log_likelihood=(-[\d.]+) stop=(end|max_length) model=(\S+)$")


def read_fasta_text(path):
    records, header = [], None
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            header = line
            records.append([header, ""])
        else:
            records[-1][1] += line
    return records


@pytest.fixture(scope="module")
def txl_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("txl") / "run"
    write_lm_dir(path, "transfo_xl")
    return path


def test_generate_cli_writes_fasta_with_headers_and_scores_agree(txl_dir, tmp_path, capsys):
    """Headers carry length and log-likelihood; score reports the same log-likelihood for ended proteins."""
    out = tmp_path / "gen.fasta"
    argv = ["generate", "--model", str(txl_dir), "--num", "5", "--max-length", "30", "--seed", "1",
            "--batch-size", "4", "--no-progress"]
    assert cli.main(argv + ["--out", str(out)]) == 0
    records = read_fasta_text(out)
    assert len(records) == 5
    for i, (header, seq) in enumerate(records):
        m = HEADER.match(header)
        assert m, header
        assert int(m.group(1)) == i and int(m.group(2)) == len(seq) and m.group(5) == str(txl_dir)
        assert set(seq) <= set(alphabet.STANDARD_RESIDUES)
    scores = tmp_path / "scores.tsv"
    assert cli.main(["score", "--model", str(txl_dir), "--fasta", str(out), "--out", str(scores),
                     "--no-progress"]) == 0
    rows = [line.split("\t") for line in scores.read_text().splitlines()[1:]]
    ended = [(float(HEADER.match(h).group(3)), float(r[2])) for (h, _), r in zip(records, rows)
             if HEADER.match(h).group(4) == "end"]
    assert ended, "no protein ended: pick another seed"
    for in_header, scored in ended:
        assert abs(in_header - scored) < 1e-3
    assert cli.main(argv + ["--out", str(tmp_path / "again.fasta")]) == 0
    assert (tmp_path / "again.fasta").read_text() == out.read_text()


def test_generate_refuses_existing_out_and_bad_options_in_one_line(txl_dir, tmp_path, capsys):
    out = tmp_path / "kept.fasta"
    out.write_text(">mine\nMKV\n")
    base = ["generate", "--model", str(txl_dir), "--num", "2", "--max-length", "10", "--no-progress"]
    cases = [
        (["--out", str(out)], "--overwrite"),
        (["--out", str(tmp_path / "a.fa"), "--temperature", "0"], "--temperature"),
        (["--out", str(tmp_path / "a.fa"), "--prompt", "MK1"], "--prompt"),
        (["--out", str(tmp_path / "a.fa"), "--prompt", "MKVLAAGVLAAG"], "--max-length"),
    ]
    for extra, needle in cases:
        capsys.readouterr()
        assert cli.main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert out.read_text() == ">mine\nMKV\n"
    assert not (tmp_path / "a.fa").exists()


def test_generate_refuses_a_masked_language_model(tmp_path, capsys):
    write_lm_dir(tmp_path / "bert", "bert")
    assert cli.main(["generate", "--model", str(tmp_path / "bert"), "--num", "1", "--max-length", "5",
                     "--out", str(tmp_path / "x.fa"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "use score" in err and len(err.strip().splitlines()) == 1


def test_generate_and_score_do_not_load_tensorflow():
    code = ("import sys\n"
            "from prottrans_jax import cli\n"
            "from prottrans_jax.generation import generate, scoring, tokens\n"
            "tokens.framing('xlnet', 37)\n"
            "cli.build_parser().parse_args(['score', '--model', 'm', '--fasta', 'f', '--out', 'o'])\n"
            "print('tensorflow' in sys.modules, 'seqio' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
