"""embed killed with SIGKILL inside a part write and inside the final merge: nothing half-written is ever read."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import threading

import h5py
import numpy as np

from embed_fixtures import proteins, read_h5, t5_run  # noqa: F401 (fixtures)
from model_dirs import write_fasta
from prottrans_jax import embed
from prottrans_jax.embedding import h5_store

# One sequence per part file (save_every_seconds=0 writes each finished sequence at once).
_CHILD = """
import sys
from prottrans_jax import embed
embed.embed_fasta(sys.argv[1], sys.argv[2], sys.argv[3], per_residue=True, per_protein=False,
                  max_sequences_per_batch=2, save_every_seconds=0, progress=False)
"""


def _kill_when_paused(args, where: str) -> pathlib.Path:
    """Runs the embed child with the test-only pause at ``where``; SIGKILLs it there; returns its temporary file."""
    env = {**os.environ, "XLA_FLAGS": "", h5_store.TEST_PAUSE_ENV: where}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    timer = threading.Timer(240, proc.kill)  # a child that never pauses fails the test, not hang it
    timer.start()
    lines, tmp = [], None
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith(f"{h5_store.TEST_PAUSE_ENV}: paused in {where} writing "):
                tmp = pathlib.Path(line.rsplit(" writing ", 1)[1].strip())
                # Mid-write: the temporary file has bytes, and the process is still inside the write.
                assert tmp.stat().st_size > 0 and proc.poll() is None
                break
    finally:
        timer.cancel()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert tmp is not None, "".join(lines)[-3000:]
    assert proc.returncode == -signal.SIGKILL
    return tmp


def _names_in_parts(parts_dir: pathlib.Path) -> list[str]:
    names = []
    for part in sorted(parts_dir.glob("part_*.h5")):
        with h5py.File(part, "r") as f:  # every part file left is whole and readable
            names += list(f)
    return names


def test_sigkill_during_a_part_write_and_during_the_merge(t5_run, proteins, tmp_path):
    cut = [p[:90] for p in proteins if len(p) >= 90]  # one length bucket: one compilation per process
    first = {f"a{i}": s for i, s in enumerate(cut[:4])}
    more = {f"b{i}": s for i, s in enumerate(cut[4:16])}
    everything = write_fasta(tmp_path / "all.fa", {**first, **more})
    reference = embed.embed_fasta(t5_run, everything, tmp_path / "ref.h5", per_residue=True, per_protein=False,
                                  progress=False)  # uninterrupted
    out = tmp_path / "out.h5"
    parts_dir = tmp_path / "out.h5.parts"
    embed.embed_fasta(t5_run, write_fasta(tmp_path / "first.fa", first), out, per_residue=True, per_protein=False,
                      progress=False)
    before = hashlib.sha256(out.read_bytes()).hexdigest()

    # (a) Killed while writing the third part file (part_000002): two whole parts stay, the third never appears.
    half_part = _kill_when_paused([t5_run, everything, out], "part_write:2")
    assert half_part.parent == parts_dir and half_part.exists()  # the kill left the half-written temporary ...
    assert sorted(p.name for p in parts_dir.glob("part_*.h5")) == ["part_000000.h5", "part_000001.h5"]  # ... only
    assert _names_in_parts(parts_dir) == ["b0", "b1"]  # longest first, ties in FASTA order: the first of `more`
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before  # the finished file is untouched

    # (b) The same command again resumes, embeds the rest, and is killed inside the merge into OUT.h5.
    half_merge = _kill_when_paused([t5_run, everything, out], "finalize")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before  # still untouched mid-merge
    assert half_merge.parent == tmp_path and half_merge.exists() and half_merge.name.startswith(".out.h5.partial-")
    assert sorted(_names_in_parts(parts_dir)) == sorted(more)  # each sequence once: b0, b1 were not redone

    # The same command a third time: nothing left to embed, the merge completes, every leftover is gone.
    summary = embed.embed_fasta(t5_run, everything, out, per_residue=True, per_protein=False, progress=False)
    assert (summary.embedded, summary.already_done) == (0, len(first) + len(more))
    assert not parts_dir.exists() and not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]
    got, attrs, ds_attrs = read_h5(out)
    expected, ref_attrs, ref_ds_attrs = read_h5(reference.outputs["per_residue"])
    assert sorted(got) == sorted(expected) and ds_attrs == ref_ds_attrs
    for name in expected:  # other batch neighbours and padding: equal to float rounding
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5)
    assert {k: v for k, v in attrs.items() if k != "updated"} == {k: v for k, v in ref_attrs.items() if k != "updated"}
