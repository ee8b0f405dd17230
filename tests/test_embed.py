"""embed: HDF5 layout and ids, batching, long sequences, refused resumes, bad inputs (TensorFlow-free)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from embed_fixtures import proteins, read_h5 as _read, t5_run  # noqa: F401 (fixtures)
from model_dirs import write_fasta, write_model_dir
from prottrans_jax import cli, embed, model_io
from prottrans_jax.embedding import batching, h5_store, limits
from prottrans_jax.embedding.encoder import Embedder


# -- batching ------------------------------------------------------------------------------
def test_plan_batches_bounds_padding_shapes_and_memory():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(3, 3000, 2000)) + [5001, 1, 1]
    edges = batching.bucket_edges(max(lengths))
    plan = batching.plan_batches(lengths, max_tokens=4000, max_rows=100, row_multiple=4)
    seen = [i for b in plan for i in b.indices]
    assert sorted(seen) == list(range(len(lengths)))
    assert [lengths[i] for i in seen] == sorted(lengths, reverse=True)  # longest first
    shapes = {(b.rows, b.padded_length) for b in plan}
    assert len(shapes) <= len({b.padded_length for b in plan}) <= len(edges)
    for b in plan:
        assert b.rows % 4 == 0 and len(b.indices) <= b.rows
        assert b.rows * b.padded_length <= 4000 or b.rows == 4
        assert all(lengths[i] <= b.padded_length for i in b.indices)
        longest = max(lengths[i] for i in b.indices)
        assert b.padded_length - longest < 32 + 0.125 * longest
    assert sum(b.rows - len(b.indices) for b in plan[:-1]) == 0  # only the last batch has empty rows


def _windows_by_hand(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """The rule README states: ``window`` residues from 0, every ``window - overlap``, the last ending at ``length``."""
    if length <= window:
        return [(0, length)]
    spans, start = [], 0
    while start + window < length:
        spans.append((start, start + window))
        start += window - overlap
    return spans + [(length - window, length)]


def _most_central(spans: list[tuple[int, int]], length: int) -> list[set[int]]:
    """Per residue, the windows where it has the most context on its shorter side (all of them on a tie)."""
    best = []
    for r in range(length):
        depth = {i: min(r - s, e - 1 - r) for i, (s, e) in enumerate(spans) if s <= r < e}
        best.append({i for i, d in depth.items() if d == max(depth.values())})
    return best


@pytest.mark.parametrize("length, window, overlap", [(10_000, 3000, 256), (3001, 3000, 100), (50, 3000, 256),
                                                     (7000, 1000, 0), (650, 300, 101), (1001, 200, 37)])
def test_each_residue_is_kept_from_the_window_where_it_is_most_central(length, window, overlap):
    spans = limits.windows(length, window, overlap)
    assert [(s, e) for s, e, _, _ in spans] == _windows_by_hand(length, window, overlap)
    kept_in = np.full(length, -1)
    for i, (_, _, keep_start, keep_end) in enumerate(spans):
        assert (kept_in[keep_start:keep_end] == -1).all()  # kept once ...
        kept_in[keep_start:keep_end] = i
    best = _most_central(_windows_by_hand(length, window, overlap), length)
    assert all(kept_in[r] in best[r] for r in range(length))  # ... from a most central window


# -- layout ------------------------------------------------------------------------------
def test_h5_layout_ids_and_attributes(t5_run, proteins, tmp_path):
    records = {"sp|P12345.2/1-50": proteins[0][:50], "plain": proteins[1], "x.y": proteins[2][:7]}
    fasta_path = write_fasta(tmp_path / "in.fa", records)
    summary = embed.embed_fasta(t5_run, fasta_path, tmp_path / "out.h5", per_residue=True, per_protein=True,
                                progress=False)
    assert summary.outputs == {"per_residue": str(tmp_path / "out.h5"),
                               "per_protein": str(tmp_path / "out.per_protein.h5")}
    residue, file_attrs, ds_attrs = _read(tmp_path / "out.h5")
    protein, protein_attrs, _ = _read(tmp_path / "out.per_protein.h5")
    assert sorted(residue) == sorted(protein) == sorted(["sp|P12345_2_1-50", "plain", "x_y"])
    for rid, seq in records.items():
        name = rid.replace("/", "_").replace(".", "_")
        assert residue[name].shape == (len(seq), 32) and residue[name].dtype == np.float32
        assert protein[name].shape == (32,)
        np.testing.assert_allclose(protein[name], residue[name].mean(axis=0), atol=1e-6)
        assert ds_attrs[name]["original_id"] == rid and ds_attrs[name]["length"] == len(seq)
        assert ds_attrs[name]["sequence_sha1"] == hashlib.sha1(seq.encode()).hexdigest()
    assert file_attrs["pooling"] == "per_residue" and protein_attrs["pooling"] == "per_protein"
    assert file_attrs["architecture"] == "T5ForConditionalGeneration" and file_attrs["step"] == 7
    assert file_attrs["layer"] == 2 and file_attrs["dtype"] == "float32" and file_attrs["num_sequences"] == 3
    assert not (tmp_path / "out.h5.parts").exists()
    whole = embed.embed_fasta(t5_run, fasta_path, tmp_path / "hdr.h5", full_header_ids=True, progress=False)
    assert "plain some description" in _read(whole.outputs["per_protein"])[0]


def test_batching_and_devices_do_not_change_embeddings(t5_run, proteins, tmp_path):
    records = {f"p{i}": s for i, s in enumerate(proteins[:24])}
    fasta_path = write_fasta(tmp_path / "in.fa", records)
    model = model_io.load_model(t5_run)
    alone = embed.embed_fasta(model, fasta_path, tmp_path / "alone.h5", per_residue=True, per_protein=False,
                              max_sequences_per_batch=1, devices=jax.local_devices()[:1], progress=False)
    batched = embed.embed_fasta(model, fasta_path, tmp_path / "batched.h5", per_residue=True, per_protein=False,
                                max_residues_per_batch=8000, progress=False)
    assert jax.local_device_count() == 8 and batched.compiled_shapes < alone.compiled_shapes
    a, b = _read(alone.outputs["per_residue"])[0], _read(batched.outputs["per_residue"])[0]
    for name in records:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)


def test_bert_family_drops_cls_and_sep(tmp_path, proteins):
    write_model_dir(tmp_path / "run", "albert")
    records = {"a": proteins[3][:40], "b": proteins[4][:9]}
    summary = embed.embed_fasta(tmp_path / "run", write_fasta(tmp_path / "in.fa", records), tmp_path / "o.h5",
                                per_residue=True, per_protein=False, progress=False)
    out, attrs, _ = _read(summary.outputs["per_residue"])
    assert out["a"].shape == (40, 32) and out["b"].shape == (9, 32) and attrs["architecture"] == "AlbertForMaskedLM"


# -- long sequences ----------------------------------------------------------------------------
def test_a_5000_residue_protein_is_embedded_whole(t5_run, proteins, tmp_path, monkeypatch):
    # The default --max-length from a fixed free-memory figure, not this shared machine's momentary one: 80% of
    # 3 GB holds one 5,001-token row of the tiny model (limits.peak_bytes: 2.1 GB), so it is not chunked.
    monkeypatch.setenv(limits.AVAILABLE_MEMORY_ENV, "3000000000")
    long_seq = "".join(proteins)[:5000]
    fasta_path = write_fasta(tmp_path / "in.fa", {"titin_like": long_seq})
    model, one = model_io.load_model(t5_run), jax.local_devices()[:1]  # 8 fake CPU devices: 8 rows in RAM
    summary = embed.embed_fasta(model, fasta_path, tmp_path / "o.h5", per_residue=True, per_protein=False,
                                progress=False, devices=one)
    out, attrs, _ = _read(summary.outputs["per_residue"])
    assert summary.chunked == [] == summary.skipped_too_long and "chunked" not in attrs
    whole = out["titin_like"]
    direct = Embedder(model, devices=one).embed([long_seq], 1, 5001)[0][0]  # one encoder call on all 5,001 tokens
    assert whole.shape == (5000, 32)
    np.testing.assert_allclose(whole, direct, atol=1e-5)
    # Windowed references. T5's attention is global: its relative buckets cap only the position bias (every
    # distance >= 91 shares the last bucket), not what a residue attends to, so no windowed residue equals the
    # whole-sequence one exactly; they differ by the share of each softmax the keys outside the window would
    # take. Asserted: that difference is small next to misaligning residues by one, and shrinks as windows grow
    # (the whole sequence is their limit). Not asserted: that residues deep inside a window agree better than
    # ones near its edge; this random model's bucket table is too flat for that (measured: no difference).
    norm = np.linalg.norm(whole, axis=-1)
    median_error = {}
    for window in (1000, 2000):
        chunked = embed.embed_fasta(model, fasta_path, tmp_path / f"w{window}.h5", per_residue=True,
                                    per_protein=False, max_length=window, long_sequences="chunk", progress=False,
                                    devices=one)
        windowed = _read(chunked.outputs["per_residue"])[0]["titin_like"]
        median_error[window] = np.median(np.linalg.norm(windowed - whole, axis=-1) / norm)
        shifted = np.median(np.linalg.norm(windowed[:-1] - whole[1:], axis=-1) / norm[1:])
        assert median_error[window] < 0.1 and shifted > 10 * median_error[window], (window, median_error, shifted)
    assert median_error[2000] < median_error[1000]


def test_long_sequence_policies(t5_run, proteins, tmp_path, capsys):
    records = {"short": proteins[0][:80], "long": "".join(proteins)[:650]}
    fasta_path = write_fasta(tmp_path / "in.fa", records)
    args = ["embed", "--model", str(t5_run), "--fasta", str(fasta_path), "--max-length", "300", "--no-progress",
            "--per-residue"]
    assert cli.main([*args, "--out", str(tmp_path / "e.h5")]) == 2
    err = capsys.readouterr().err
    assert "long (650)" in err and "--long-sequences skip" in err and not (tmp_path / "e.h5").exists()

    assert cli.main([*args, "--out", str(tmp_path / "s.h5"), "--long-sequences", "skip"]) == 0
    out, attrs, _ = _read(tmp_path / "s.h5")
    assert list(out) == ["short"] and attrs["skipped_too_long"] == '["long"]'

    assert cli.main([*args, "--out", str(tmp_path / "c.h5"), "--long-sequences", "chunk",
                     "--chunk-overlap", "101"]) == 0
    out, attrs, _ = _read(tmp_path / "c.h5")
    assert out["long"].shape == (650, 32) and attrs["chunked"] == '["long"]'
    # Each joined residue equals its embedding in the window where it is most central, that window embedded alone
    # by one direct encoder call, and differs clearly from its embedding in any less central window.
    embedder = Embedder(model_io.load_model(t5_run), devices=jax.local_devices()[:1])
    spans = _windows_by_hand(650, 300, 101)  # 0-300, 199-499, 350-650: uneven overlaps, a tie at residue 249
    alone = [embedder.embed([records["long"][s:e]], 1, e - s + 1)[0][0] for s, e in spans]
    for r, best in enumerate(_most_central(spans, 650)):
        error = {i: np.abs(out["long"][r] - alone[i][r - s]).max() for i, (s, e) in enumerate(spans) if s <= r < e}
        assert min(error[i] for i in best) < 1e-5, (r, error)
        assert all(error[i] > 1e-3 for i in set(error) - best), (r, error)


# -- resume (a SIGKILL mid-write: test_embed_kill.py) ---------------------------------------------
def test_resume_refuses_another_model_setting_or_sequence(t5_run, proteins, tmp_path):
    records = {"a": proteins[0], "b": proteins[1]}
    fasta_path = write_fasta(tmp_path / "in.fa", records)
    embed.embed_fasta(t5_run, fasta_path, tmp_path / "o.h5", progress=False)
    with pytest.raises(h5_store.OutputMismatchError, match="layer: 2 there vs 1 now"):
        embed.embed_fasta(t5_run, fasta_path, tmp_path / "o.h5", layer=1, progress=False)
    changed = write_fasta(tmp_path / "changed.fa", {"a": proteins[2], "b": proteins[1]})
    with pytest.raises(h5_store.OutputMismatchError, match="'a' for a different sequence"):
        embed.embed_fasta(t5_run, changed, tmp_path / "o.h5", progress=False)


def test_resume_refuses_other_weights_at_the_same_model_path(proteins, tmp_path, capsys):
    run, first, other = tmp_path / "run", tmp_path / "seed0", tmp_path / "seed1"
    write_model_dir(first, "t5", seed=0)
    write_model_dir(other, "t5", seed=1)  # same config, step and architecture; other weights
    records = {f"p{i}": s[:60] for i, s in enumerate(proteins[:4])}
    out = tmp_path / "o.h5"
    first.rename(run)
    embed.embed_fasta(run, write_fasta(tmp_path / "half.fa", dict(list(records.items())[:2])), out, progress=False)
    before = out.read_bytes()
    args = ["embed", "--model", str(run), "--fasta", str(write_fasta(tmp_path / "all.fa", records)), "--out",
            str(out), "--no-progress"]
    run.rename(first)
    other.rename(run)  # retrained into the same folder
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "model_fingerprint: " in err[0], err
    assert "(other weights at the same model path)" in err[0] and out.read_bytes() == before
    run.rename(other)
    first.rename(run)  # the weights it was written with, back in place: resumed
    assert cli.main(args) == 0
    assert "embedded 2 sequence(s) (2 already done)" in capsys.readouterr().out


# -- bad inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("content, needle", [
    (">a\nMKV1L\n", "line 2"),
    (">a\nMKV\n>b\n\n>c\nMK\n", "record 'b'"),
    (">a/b\nMKV\n>a.b\nMKV\n", "already used by the record"),
    ("MKV\n", "line 1"),
])
def test_bad_fasta_is_one_clear_error(t5_run, tmp_path, capsys, content, needle):
    bad = tmp_path / "bad.fa"
    bad.write_text(content)
    assert cli.main(["embed", "--model", str(t5_run), "--fasta", str(bad), "--out", str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "o.h5").exists()


def test_wrong_model_and_family_are_refused(t5_run, tmp_path, capsys, proteins):
    fasta_path = write_fasta(tmp_path / "in.fa", {"a": proteins[0]})
    write_model_dir(tmp_path / "bert", "bert")
    for model, extra, needle in ((tmp_path / "nope", [], "no such model directory"),
                                 (tmp_path / "bert", ["--family", "t5"], "not a t5 model"),
                                 (t5_run, ["--layer", "9"], "--layer 9")):
        assert cli.main(["embed", "--model", str(model), "--fasta", str(fasta_path), "--out",
                         str(tmp_path / "o.h5"), *extra]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "o.h5").exists()


def test_embed_and_export_do_not_load_tensorflow(t5_run, tmp_path, proteins):
    fasta_path = write_fasta(tmp_path / "in.fa", {"a": proteins[0][:30]})
    code = (
        "import sys; from prottrans_jax import cli; "
        f"rc = cli.main(['embed', '--model', {str(t5_run)!r}, '--fasta', {str(fasta_path)!r}, "
        f"'--out', {str(tmp_path / 'o.h5')!r}, '--no-progress']); "
        f"rc += cli.main(['export-hf', '--checkpoint', {str(t5_run)!r}, '--out', {str(tmp_path / 'hf')!r}]); "
        "assert rc == 0 and 'tensorflow' not in sys.modules, [m for m in sys.modules if 'tensorflow' in m][:5]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize("dtype", ("bfloat16", "float16"))
def test_half_precision_embeddings_are_finite_and_close(t5_run, proteins, tmp_path, dtype):
    records = {f"p{i}": s[:n] for i, (s, n) in enumerate(zip(proteins, (120, 40, 7)))}
    fasta_path = write_fasta(tmp_path / "in.fa", records)
    full = embed.embed_fasta(t5_run, fasta_path, tmp_path / "f.h5", per_residue=True, per_protein=False,
                             progress=False)
    half = embed.embed_fasta(t5_run, fasta_path, tmp_path / "h.h5", per_residue=True, per_protein=False,
                             dtype=dtype, progress=False)
    a, (b, attrs, _) = _read(full.outputs["per_residue"])[0], _read(half.outputs["per_residue"])
    assert attrs["storage_dtype"] == "float16" and attrs["dtype"] == dtype
    for name in records:  # padded batches: masked positions must not turn into NaN in half precision
        assert b[name].dtype == np.float16 and np.isfinite(b[name]).all()
        np.testing.assert_allclose(b[name].astype(np.float32), a[name], atol=0.1)
