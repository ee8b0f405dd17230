"""Corpus sources: TFRecord shards from FASTA, gin and environment configuration of corpus paths."""

import gin
import numpy as np
import pytest

import prottrans_jax_tasks
from prottrans_jax import data_sources, fasta, pipeline


def test_fasta_to_tfrecords_round_trip(tmp_path, demo_corpus):
    small = tmp_path / "small.fasta"
    records = []
    for i, rec in enumerate(fasta.read_fasta(str(demo_corpus))):
        if i == 400:
            break
        records.append(rec)
    small.write_text("".join(f">{r.id}\n{r.sequence}\n" for r in records))
    written = data_sources.fasta_to_tfrecords(str(small), str(tmp_path / "shards"), num_shards=4, validation_fraction=0.1, progress=False)
    assert len(written["train"]) == 4 and not list(tmp_path.glob("*.incomplete"))
    source = data_sources.tfrecord_source({s: str(tmp_path / f"shards-{s}.tfrecord-*") for s in ("train", "validation")})
    got = {}
    for split in ("train", "validation"):
        for ex in source.get_dataset(split=split, shuffle=False).as_numpy_iterator():
            got[ex["id"].decode()] = (split, ex["sequence"].decode())
    assert got == {r.id: (fasta.split_of(r.id, 0.1), r.sequence) for r in records}
    names = prottrans_jax_tasks.register_tfrecord_tasks(
        "shards", {s: str(tmp_path / f"shards-{s}.tfrecord-*") for s in ("train", "validation")}
    )
    batch = next(pipeline.numpy_batches(pipeline.get_dataset(names[0], length=64, batch_size=4, num_epochs=1)))
    assert batch["encoder_input_tokens"].shape == (4, 64)


def test_corpus_paths_from_gin_and_environment(tmp_path, monkeypatch):
    a, b = tmp_path / "a.fasta", tmp_path / "b.fasta"
    a.write_text(">a1\nMKVLA\n")
    b.write_text(">b1\nWWWWWWWW\n")
    monkeypatch.setenv("PROTTRANS_JAX_UNIREF50_FASTA", str(a))
    assert prottrans_jax_tasks.corpus_glob("uniref50") == str(a)
    with gin.unlock_config():
        gin.bind_parameter("corpus_paths.paths", {"uniref50": str(b)})
    try:
        assert prottrans_jax_tasks.corpus_glob("uniref50") == str(b), "gin overrides the environment"
        ds = pipeline.get_dataset("uniref50_prot_t5_denoise", length=16, batch_size=1, num_epochs=1)
        # Denoise targets are the whole sequence: 8 W's (id 21) then EOS.
        targets = next(pipeline.numpy_batches(ds))["decoder_target_tokens"][0]
        np.testing.assert_array_equal(targets[:9], [21] * 8 + [1])
    finally:
        gin.clear_config()
    with pytest.raises(ValueError, match="PROTTRANS_JAX_BFD_FASTA"):
        prottrans_jax_tasks.corpus_glob("bfd")


def test_shipped_demo_corpus_is_valid():
    stats = fasta.fasta_stats(prottrans_jax_tasks.shipped_demo_corpus())
    assert stats["records"] == 2000 and stats["min_length"] >= 30
