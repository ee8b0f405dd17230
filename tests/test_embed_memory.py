"""embed's memory bound: the longest length it allows fits, batches stay within it, and a chunked run's real peak does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import pytest

from embed_fixtures import t5_run  # noqa: F401 (fixture)
from model_dirs import write_fasta
from proteins import read_proteins
from prottrans_jax import embed, model_io
from prottrans_jax.embedding import limits
from prottrans_jax.embedding.encoder import Embedder
from prottrans_jax.models import configs


@pytest.mark.parametrize("name", ["prot_t5_tiny", "prot_t5_xl_u50", "prot_bert", "prot_albert_tiny"])
@pytest.mark.parametrize("available, rows", [(1e9, 1), (2e9, 1), (24e9, 1), (24e9, 8)])
def test_the_longest_allowed_length_fits_and_one_more_does_not(name, available, rows):
    config = configs.get_config(name)
    tokens = limits.max_tokens_for_memory(config, int(available), rows=rows)
    assert limits.peak_bytes(config, tokens, rows=rows) <= 0.8 * available
    assert limits.peak_bytes(config, tokens + 1, rows=rows) > 0.8 * available
    budget = limits.peak_bytes(config, tokens, rows=rows)
    assert limits.max_rows_for_memory(config, tokens, budget) == rows


def test_bound_covers_the_prot_t5_xl_measurement():
    # scripts/check_long_sequence.py: ProtT5-XL's encoder on 5,000 residues added ~14.5 GB to its weights.
    assert limits.peak_bytes(configs.get_config("prot_t5_xl_u50"), 5001) > 14.5e9


def test_available_memory_can_be_given(monkeypatch):
    monkeypatch.setenv(limits.AVAILABLE_MEMORY_ENV, "1500000000")
    assert limits.available_memory_bytes() == 1_500_000_000
    monkeypatch.setenv(limits.AVAILABLE_MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match=limits.AVAILABLE_MEMORY_ENV):
        limits.available_memory_bytes()


def test_no_batch_needs_more_memory_than_one_sequence_of_the_max_length(t5_run):
    embedder = Embedder(model_io.load_model(t5_run))
    limit = 1000
    lengths = [999, 1000, 980, 700, 520, 510, 300, 300, 299, 120, 64, 40, 7] + [150] * 40
    units = [embed._Unit(i, 0, n, 0, n) for i, n in enumerate(lengths)]
    plan = embed.plan_batches(embedder, units, limit, max_tokens=16000, max_rows=100, dtype_bytes=4)
    promised = limits.peak_bytes(embedder.config, limit + 1, rows=embedder.rows_per_memory(embedder.num_devices))
    assert sorted(i for b in plan for i in b.indices) == list(range(len(lengths)))
    assert max(b.padded_length for b in plan) == limit + 1  # the last bucket is not padded past the bound
    for b in plan:
        assert b.rows % embedder.num_devices == 0
        assert limits.peak_bytes(embedder.config, b.padded_length, rows=embedder.rows_per_memory(b.rows)) <= promised
    assert any(b.rows < 16000 // b.padded_length for b in plan)  # the memory cap, not max_tokens, limited some


_CHILD = """
import json, os, pathlib, sys
from prottrans_jax import train
os.environ["XLA_FLAGS"] = train.default_cpu_xla_flags()  # as the CLI sets them
import h5py, jax, tqdm.auto
from prottrans_jax import cli, embed, model_io
model_io.load_model(sys.argv[1]); jax.devices()

def status(key):
    line = next(s for s in pathlib.Path("/proc/self/status").read_text().splitlines() if s.startswith(key + ":"))
    return int(line.split()[1]) * 1024

base = status("VmRSS")  # after imports and a model load: what any run holds before it embeds
pathlib.Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) counts from here
rc = cli.main(sys.argv[2:])
print(json.dumps({"rc": rc, "added": status("VmHWM") - base}))
"""


def test_a_chunked_long_protein_peaks_under_the_promised_bound(t5_run, tmp_path, demo_corpus):
    available = 600_000_000  # -> windows of ~2,300 residues for the tiny model
    config = configs.get_config("prot_t5_tiny")
    tokens = limits.max_tokens_for_memory(config, available)
    protein = "".join(read_proteins(demo_corpus, 80))[:int(2.2 * tokens)]  # three windows
    fasta_path = write_fasta(tmp_path / "long.fa", {"long": protein})
    out = tmp_path / "o.h5"
    env = {**os.environ, "XLA_FLAGS": "", limits.AVAILABLE_MEMORY_ENV: str(available)}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(t5_run), "embed", "--model", str(t5_run), "--fasta",
         str(fasta_path), "--out", str(out), "--per-residue", "--long-sequences", "chunk", "--no-progress",
         "--no-compile-cache"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    with h5py.File(out) as f:
        assert f["long"].shape == (len(protein), 32)
        assert json.loads(f.attrs["chunked"]) == ["long"] and f.attrs["max_length"] == tokens - 1
    promised = limits.peak_bytes(config, tokens)
    assert result["added"] <= promised, (result["added"] / 2**20, promised / 2**20)
    assert result["added"] > promised / 2  # and the bound is not so loose that windows are needlessly short


def test_default_max_length_is_the_memory_bound_capped_by_the_positions(tmp_path):
    """80% of the free memory decides, unless the model has fewer positions (BERT tiny: 128, so 126 residues)."""
    from model_dirs import write_model_dir

    write_model_dir(tmp_path / "bert", "bert")
    bert = Embedder(model_io.load_model(tmp_path / "bert"), devices=jax_devices()[:1])
    assert embed.default_max_length(bert, 4, available=int(24e9)) == bert.max_positions - 2 == 126
    rows = bert.rows_per_memory(1)
    little = int(limits.peak_bytes(bert.config, 60, rows=rows) / 0.8) + 1  # the bound, not the positions, decides
    assert limits.max_tokens_for_memory(bert.config, little, 4, rows=rows) == 60
    assert embed.default_max_length(bert, 4, available=little) == 58


def test_prot_t5_xl_default_on_the_benchmark_machine():
    """README and BENCHMARKS.md state ~4,900 residues for ProtT5-XL with ~18.7 GB free after its weights."""
    tokens = limits.max_tokens_for_memory(configs.get_config("prot_t5_xl_u50"), int(18.7e9), 4, rows=1)
    assert 4_800 <= tokens - 1 <= 5_000


def jax_devices():
    import jax

    return jax.devices()
