"""embed run after run: Ctrl-C (one line, exit 130, resumable), --overwrite, and the persistent compilation cache."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from embed_fixtures import proteins, read_h5, t5_run  # noqa: F401 (fixtures)
from model_dirs import write_fasta
from prottrans_jax import cli, embed


def _read(path):
    return read_h5(path)[:2]


# `prottrans-jax ARGS` with Ctrl-C raising KeyboardInterrupt, as from a terminal (a test run in the background
# would otherwise hand its children an ignored SIGINT); SLOW=1 makes each write of finished sequences take
# 0.2 s longer, so that an interrupt lands mid-run on any machine.
_TERMINAL = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from prottrans_jax import cli
from prottrans_jax.embedding import h5_store
if os.environ.get("SLOW"):
    flush = h5_store.EmbeddingStore.flush
    h5_store.EmbeddingStore.flush = lambda self: (flush(self), time.sleep(0.2))[0]
sys.exit(cli.main(sys.argv[1:]))
"""


def _embed_child(args, slow=False):
    """``prottrans-jax embed ARGS`` in a child process on one device."""
    return subprocess.Popen([sys.executable, "-c", _TERMINAL, "embed", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "XLA_FLAGS": "", "SLOW": "1" if slow else ""})


def test_ctrl_c_saves_what_is_done_says_how_to_resume_and_exits_130(t5_run, proteins, tmp_path):
    cut = [p[:100] for p in proteins if len(p) >= 100][:60]  # one length bucket: one compilation
    records = {f"p{i}": s for i, s in enumerate(cut)}
    fasta_path = write_fasta(tmp_path / "in.fa", records)
    out = tmp_path / "out.h5"
    args = ["--model", t5_run, "--fasta", fasta_path, "--out", out, "--per-residue", "--save-every", "0",
            "--max-sequences-per-batch", "2", "--no-progress"]
    proc = _embed_child(args, slow=True)  # 30 batches, each written on its own: >= 6 s
    deadline = time.time() + 180
    parts = out.with_name("out.h5.parts")
    while time.time() < deadline and proc.poll() is None and len(list(parts.glob("part_*.h5"))) < 3:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    found = re.fullmatch(r"prottrans-jax embed: interrupted: (\d+) of 60 sequence\(s\) are saved \(in (.+)\); "
                         r"run the same command again to resume from there", lines[0])
    assert found and found.group(2) == str(parts), lines[0]
    saved = set()
    for part in parts.glob("part_*.h5"):
        with h5py.File(part) as f:
            saved |= set(f)
    assert 3 <= len(saved) == int(found.group(1)) < 60 and not out.exists()

    again = _embed_child(args)  # the same command again
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0 and f"({len(saved)} already done)" in stdout, stderr[-3000:]
    resumed, attrs = _read(out)
    reference = embed.embed_fasta(t5_run, fasta_path, tmp_path / "ref.h5", per_residue=True, per_protein=False,
                                  progress=False)
    expected, ref_attrs = _read(reference.outputs["per_residue"])
    assert sorted(resumed) == sorted(expected) and attrs["num_sequences"] == 60 and not parts.exists()
    for name in expected:  # other batch neighbours and padding: equal to float rounding
        np.testing.assert_allclose(resumed[name], expected[name], atol=1e-5)
    assert {k: v for k, v in attrs.items() if k != "updated"} == {k: v for k, v in ref_attrs.items() if k != "updated"}


def test_overwrite_starts_over_only_once_it_writes(t5_run, proteins, tmp_path, capsys):
    first = write_fasta(tmp_path / "first.fa", {"a": proteins[0], "b": proteins[1]})
    out = tmp_path / "o.h5"
    embed.embed_fasta(t5_run, first, out, progress=False)
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    second = write_fasta(tmp_path / "second.fa", {"c": proteins[2], "long": "".join(proteins)[:900]})
    base = ["embed", "--model", str(t5_run), "--fasta", str(second), "--out", str(out), "--no-progress", "--layer", "1"]

    assert cli.main(base) == 2  # without --overwrite: another layer is refused
    assert "layer: 2 there vs 1 now" in capsys.readouterr().err
    assert cli.main([*base, "--overwrite", "--max-length", "500"]) == 2  # fails before writing anything ...
    assert "long (900)" in capsys.readouterr().err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before  # ... so the old output is untouched

    assert cli.main([*base, "--overwrite"]) == 0
    got, attrs = _read(out)
    assert sorted(got) == ["c", "long"] and attrs["layer"] == 1 and attrs["num_sequences"] == 2
    assert "embedded 2 sequence(s) (0 already done)" in capsys.readouterr().out
    assert cli.main(base) == 0  # and a re-run without it resumes: nothing left to do
    assert "embedded 0 sequence(s) (2 already done)" in capsys.readouterr().out


_CACHE_CHILD = """
import json, sys
import jax.monitoring
events = {}
jax.monitoring.register_event_listener(lambda name, **kw: events.__setitem__(name, events.get(name, 0) + 1))
from prottrans_jax import cli
rc = cli.main(sys.argv[1:])
print(json.dumps({"rc": rc, **{k.rsplit("/", 1)[-1]: v for k, v in events.items() if "compilation_cache" in k}}))
"""


def _embed_counting_cache(args):
    proc = subprocess.run([sys.executable, "-c", _CACHE_CHILD, "embed", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "XLA_FLAGS": ""}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    return result


def test_a_second_run_compiles_nothing_and_no_compile_cache_writes_nothing(t5_run, proteins, tmp_path):
    fasta_path = write_fasta(tmp_path / "in.fa", {f"p{i}": s for i, s in enumerate(proteins[:6])})
    cache = tmp_path / "xla"
    args = ["--model", t5_run, "--fasta", fasta_path, "--no-progress", "--compile-cache", cache]
    first = _embed_counting_cache([*args, "--out", tmp_path / "1.h5"])
    entries = sorted(p.name for p in cache.iterdir())
    assert first.get("cache_misses", 0) >= 2 and len(entries) == first["cache_misses"]  # the buckets at least
    second = _embed_counting_cache([*args, "--out", tmp_path / "2.h5"])
    assert second.get("cache_misses", 0) == 0 and second.get("cache_hits") == first["cache_misses"]
    assert sorted(p.name for p in cache.iterdir()) == entries
    one, two = _read(tmp_path / "1.h5")[0], _read(tmp_path / "2.h5")[0]
    assert all(np.array_equal(one[k], two[k]) for k in one)

    off = tmp_path / "off"
    third = _embed_counting_cache([*args[:-1], off, "--no-compile-cache", "--out", tmp_path / "3.h5"])
    assert not off.exists() and "cache_hits" not in third and "cache_misses" not in third
