"""Tests for prottrans_jax.fasta: the streaming FASTA reader and validator."""

import gzip
import os
import random
import re
import subprocess
import sys
import tracemalloc
import types

import pytest

from prottrans_jax import alphabet, fasta
from prottrans_jax.fasta import FastaError, FastaRecord, expand_paths, fasta_stats, read_fasta, split_of

RESIDUES = alphabet.STANDARD_RESIDUES


def write(path, content, gz=False):
    """Writes text or bytes to path, gzip-compressed when gz; returns the path as a str."""
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def random_fasta(n_records, seed=0, width=60, max_len=500):
    """A FASTA text of random records (ids r0..), wrapped at `width`, and {id: sequence}."""
    rng = random.Random(seed)
    lines, truth = [], {}
    for i in range(n_records):
        seq = "".join(rng.choices(RESIDUES, k=rng.randint(1, max_len)))
        truth[f"r{i}"] = seq
        lines.append(f">r{i} random protein {i}")
        lines += [seq[j:j + width] for j in range(0, len(seq), width)]
    return "\n".join(lines) + "\n", truth


def strip_path(records):
    return [(r.id, r.description, r.sequence, r.line) for r in records]


# ---------------------------------------------------------------------------------------
# The real corpus.
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_records(demo_corpus):
    return list(read_fasta(demo_corpus))


@pytest.fixture(scope="module")
def demo_raw(demo_corpus):
    """The corpus read independently: [(header, raw sequence text)], with gzip and plain Python."""
    out = []
    with gzip.open(demo_corpus, "rt") as f:
        for line in f:
            if line.startswith(">"):
                out.append([line[1:].strip(), []])
            else:
                out[-1][1].append(line)
    return [(h, "".join(s)) for h, s in out]


def test_demo_corpus_counts(demo_records, demo_raw):
    assert len(demo_records) == len(demo_raw) == 14_400  # MANIFEST.md: 14,400 sequences.
    assert len({r.id for r in demo_records}) == len(demo_records)
    # Every letter is a residue and everything else is dropped, so residues = letters.
    expected_residues = sum(len(re.findall("[A-Za-z]", s)) for _, s in demo_raw)
    assert sum(len(r.sequence) for r in demo_records) == expected_residues
    assert round(expected_residues / 1e6, 2) == 4.15  # MANIFEST.md: 4.15 M residues.


def test_demo_corpus_content(demo_records, demo_raw, demo_corpus):
    allowed = set(alphabet.STANDARD_RESIDUES + "X")
    for rec, (header, raw) in zip(demo_records, demo_raw):
        assert rec.id == header.split()[0]
        assert rec.sequence == alphabet.normalize_sequence(raw)
        assert set(rec.sequence) <= allowed
        assert rec.path == str(demo_corpus)
    assert [r.line for r in demo_records] == list(range(1, 2 * len(demo_records), 2))  # One line per sequence.


def test_fasta_stats_on_demo_corpus(demo_corpus, demo_records):
    stats = fasta_stats(demo_corpus, check_unique_ids=True)
    lengths = [len(r.sequence) for r in demo_records]
    assert stats == {"files": 1, "records": len(lengths), "residues": sum(lengths), "min_length": min(lengths),
                     "max_length": max(lengths), "mean_length": sum(lengths) / len(lengths)}
    assert stats["max_length"] == 3117 and round(stats["mean_length"]) == 288  # MANIFEST.md.


def test_fasta_stats_small_and_empty(tmp_path):
    a = write(tmp_path / "a.fa", ">a\nMKV\n>b\nMK\nVLA\n")
    b = write(tmp_path / "b.fa", "")  # An empty shard is not an error.
    assert fasta_stats([a, b]) == {"files": 2, "records": 2, "residues": 8, "min_length": 3, "max_length": 5,
                                   "mean_length": 4.0}
    with pytest.raises(FastaError, match="no records") as e:  # No record at all is (embed refuses it too).
        fasta_stats(b)
    assert e.value.path == b


# ---------------------------------------------------------------------------------------
# Formats and layouts.
# ---------------------------------------------------------------------------------------
def test_multiline_records_equal_joined_sequence(tmp_path):
    text, truth = random_fasta(50, width=13)
    records = list(read_fasta(write(tmp_path / "a.fa", text)))
    assert {r.id: r.sequence for r in records} == truth
    assert records[1].description == "random protein 1"
    single = "".join(f">{k}\n{v}\n" for k, v in truth.items())
    assert [r.sequence for r in read_fasta(write(tmp_path / "b.fa", single))] == list(truth.values())


def test_crlf_equals_lf(tmp_path):
    text, _ = random_fasta(30)
    lf = list(read_fasta(write(tmp_path / "lf.fa", text)))
    crlf = list(read_fasta(write(tmp_path / "crlf.fa", text.replace("\n", "\r\n"))))
    assert strip_path(crlf) == strip_path(lf)
    assert all("\r" not in r.description and "\r" not in r.id for r in crlf)


def test_gzip_equals_plain_detected_by_magic(tmp_path):
    text, truth = random_fasta(40)
    plain = list(read_fasta(write(tmp_path / "x.fa", text)))
    gz = list(read_fasta(write(tmp_path / "x.fa.gz", text, gz=True)))
    misnamed = list(read_fasta(write(tmp_path / "gzip_without_extension.fa", text, gz=True)))
    assert strip_path(plain) == strip_path(gz) == strip_path(misnamed)
    assert [r.sequence for r in plain] == list(truth.values())


def test_blank_lines_comments_and_bom(tmp_path):
    text = "\ufeff\n; a comment\n>a first\n\nMKV\n  \n;inner comment\nLL\n\n>b\nWW\n\n"
    records = list(read_fasta(write(tmp_path / "c.fa", text)))
    assert [(r.id, r.description, r.sequence, r.line) for r in records] == [("a", "first", "MKVLL", 3),
                                                                          ("b", "", "WW", 10)]


def test_glob_over_shards_in_sorted_order(tmp_path):
    texts = {}
    for i, name in enumerate(["shard-00002.fa.gz", "shard-00000.fa.gz", "shard-00001.fa"]):  # Unsorted creation.
        texts[name] = "".join(f">{name}_{j}\n{RESIDUES[i + j]}MK\n" for j in range(3))
        write(tmp_path / name, texts[name], gz=name.endswith(".gz"))
    expected = []
    for name in sorted(texts):
        expected += list(read_fasta(str(tmp_path / name)))
    pattern = str(tmp_path / "shard-*")
    assert expand_paths(pattern) == sorted(str(tmp_path / n) for n in texts)
    assert list(read_fasta(pattern)) == expected
    # A list keeps its own order; each glob inside it is sorted.
    first = str(tmp_path / "shard-00002.fa.gz")
    assert expand_paths([first, pattern]) == [first] + sorted(str(tmp_path / n) for n in texts)


def test_long_record_round_trips(tmp_path):
    rng = random.Random(1)
    seq = "".join(rng.choices(RESIDUES, k=40_000))
    wrapped = "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60))
    for name, body in [("wrapped.fa", wrapped), ("one_line.fa.gz", seq)]:
        recs = list(read_fasta(write(tmp_path / name, f">titin_like\n{body}\n>next\nMK\n", gz=name.endswith("gz"))))
        assert [r.sequence for r in recs] == [seq, "MK"]
        assert recs[1].line == 2 + body.count("\n") + 1


def test_line_longer_than_read_block(tmp_path):
    # A single line longer than the 1 MiB read block is carried over between reads.
    seq = ("ACDEFGHIKLMNPQRSTVWY" * 150_000)[:2_500_000]
    path = write(tmp_path / "huge_line.fa", f">big\n{seq}\n>after\nMKV\n>bad\nMK!V\n")
    it = read_fasta(path)
    assert next(it).sequence == seq
    assert next(it).line == 3
    with pytest.raises(FastaError) as e:
        next(it)
    assert (e.value.line, e.value.column, e.value.record_id) == (6, 3, "bad")


def test_normalization(tmp_path):
    path = write(tmp_path / "n.fa", ">p1\nmkv-..lu z\no b*\nJx\n")
    (rec,) = read_fasta(path)
    assert rec.sequence == "MKVLXXXXXX"
    assert rec.sequence == alphabet.normalize_sequence("mkv-..lu z\no b*\nJx")
    (raw,) = read_fasta(path, normalize=False)
    assert raw.sequence == "mkv-..luzob*Jx"


def test_min_and_max_length(tmp_path):
    path = write(tmp_path / "m.fa", ">a\nMK\n>b\nMKVLA\n>c\nM\n")
    assert [r.id for r in read_fasta(path, min_length=2)] == ["a", "b"]
    assert [r.id for r in read_fasta(path, max_length=5)] == ["a", "b", "c"]
    with pytest.raises(FastaError) as e:
        list(read_fasta(path, max_length=4))
    assert_located(e.value, path, 3, "b")
    assert "max_length=4" in str(e.value)


# ---------------------------------------------------------------------------------------
# Errors: FastaError naming file, line and record, with a fix.
# ---------------------------------------------------------------------------------------
def assert_located(err, path, line=None, record_id=None):
    msg = str(err)
    assert isinstance(err, ValueError)
    assert err.path == str(path) and str(path) in msg
    assert err.line == line and (line is None or f"line {line}" in msg)
    assert err.record_id == record_id and (record_id is None or repr(record_id) in msg)
    assert "Fix:" in msg


def read_error(path, **kwargs):
    with pytest.raises(FastaError) as e:
        list(read_fasta(path, **kwargs))
    return e.value


def test_invalid_character_names_char_line_and_column(tmp_path):
    path = write(tmp_path / "bad.fa", ">ok\nMKV\n>sp|P1 protein\nMKVL\nAC1DE\n")
    err = read_error(path)
    assert_located(err, path, 5, "sp|P1")
    assert err.column == 3 and "column 3" in str(err) and "'1'" in str(err)
    crlf = write(tmp_path / "bad_crlf.fa", ">x\r\nMK\r\nM\u00e9K\r\n")
    err = read_error(crlf)
    assert_located(err, crlf, 3, "x")
    assert err.column == 2 and "0xc3" in str(err)


@pytest.mark.parametrize("text,line,column", [(">a\nMK>V\n", 2, 3),  # '>' only starts a header at a line start.
                                              (">a\nMK\n;note\nMK;V\n", 4, 3),  # ';' likewise.
                                              (">a\n;note\nMK\nM1\n", 4, 2)])  # After a comment line.
def test_markers_inside_sequence_lines_are_invalid(tmp_path, text, line, column):
    path = write(tmp_path / "gt.fa", text)
    for normalize in (True, False):
        err = read_error(path, normalize=normalize)
        assert (err.line, err.column, err.record_id) == (line, column, "a")


@pytest.mark.parametrize("text,line,rid", [(">a\nMK\n>empty\n>c\nMK\n", 3, "empty"),
                                           (">a\nMK\n>last\n\n", 3, "last"),
                                           (">gaps_only\n--..\n>b\nM\n", 1, "gaps_only")])
def test_empty_sequence(tmp_path, text, line, rid):
    path = write(tmp_path / "e.fa", text)
    err = read_error(path)
    assert_located(err, path, line, rid)
    assert "empty sequence" in str(err)


def test_sequence_before_first_header(tmp_path):
    path = write(tmp_path / "nohdr.fa", "\n\nMKVL\n>a\nMK\n")
    err = read_error(path)
    assert_located(err, path, 3, None)
    assert "before the first '>' header" in str(err)


def test_header_without_id(tmp_path):
    path = write(tmp_path / "noid.fa", ">a\nMK\n>   \nMK\n")
    assert_located(read_error(path), path, 3, None)


def test_missing_file_and_empty_glob(tmp_path):
    missing = tmp_path / "nope.fa"
    with pytest.raises(FastaError) as e:
        read_fasta(missing)  # Raised at the call, before iteration.
    assert_located(e.value, missing)
    assert "not found" in str(e.value)
    pattern = str(tmp_path / "uniref50_*.fasta.gz")
    with pytest.raises(FastaError) as e:
        expand_paths([pattern])
    assert_located(e.value, pattern)
    assert "matches no files" in str(e.value)


def test_directory(tmp_path):
    d = tmp_path / "a_dir"
    d.mkdir()
    err = read_error(d)
    assert_located(err, d)
    assert "directory" in str(err) and isinstance(err.__cause__, IsADirectoryError)


def test_permission_denied(tmp_path, monkeypatch):
    path = write(tmp_path / "secret.fa", ">a\nMK\n")
    if os.geteuid() == 0:  # root reads anything: simulate the OS refusal instead.
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", path)
        monkeypatch.setattr(fasta, "open", refuse, raising=False)
    else:
        os.chmod(path, 0)
    err = read_error(path)
    assert_located(err, path)
    assert "permission denied" in str(err) and isinstance(err.__cause__, PermissionError)


def test_corrupt_and_truncated_gzip(tmp_path):
    text, _ = random_fasta(12_000, seed=3)  # ~3 MB: the cut falls after the first 1 MiB read block.
    data = gzip.compress(text.encode())
    truncated = write(tmp_path / "truncated.fa.gz", data[: len(data) // 2])
    it = read_fasta(truncated)
    assert next(it).id == "r0"  # What was intact is read ...
    with pytest.raises(FastaError) as e:
        list(it)  # ... then a clear error, chained to gzip's.
    assert e.value.line is not None and e.value.line > 1 and e.value.record_id is not None
    assert_located(e.value, truncated, e.value.line, e.value.record_id)
    assert "truncated" in str(e.value) and isinstance(e.value.__cause__, EOFError)

    mid = len(data) // 2
    corrupt = write(tmp_path / "corrupt.fa.gz", data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 64]) + data[mid + 64:])
    err = read_error(corrupt)
    assert err.path == corrupt and err.line is not None and corrupt in str(err)

    garbage = write(tmp_path / "garbage.fa.gz", b"\x1f\x8b" + bytes(range(256)) * 4)
    err = read_error(garbage)
    assert_located(err, garbage)
    assert "gzip" in str(err)


def test_binary_and_undecodable(tmp_path):
    png = write(tmp_path / "image.fa", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    err = read_error(png)
    assert_located(err, png, 1, None)
    assert "binary" in str(err)
    header = write(tmp_path / "latin1.fa", b">caf\xe9 protein\nMK\n")
    err = read_error(header)
    assert_located(err, header, 1, None)
    assert "UTF-8" in str(err) and isinstance(err.__cause__, UnicodeDecodeError)


def test_duplicate_ids(tmp_path):
    a = write(tmp_path / "a.fa", ">x\nMK\n>y\nMK\n")
    b = write(tmp_path / "b.fa", ">z\nMK\n\n>x dup\nMKV\n")
    assert len(list(read_fasta([a, b]))) == 4  # Off by default.
    err = read_error([a, b], check_unique_ids=True)
    assert_located(err, b, 4, "x")
    assert f"{a}, line 1" in str(err)


@pytest.mark.parametrize("content, needle, line, rid", [
    (">a/1\nMK\n>b\nMK\n>a.1 same after renaming\nMKV\n",
     "name 'a_1' ('/' and '.' become '_', as in embedding files) is already used by the record 'a/1' at {path}, line 1",
     5, "a.1"),
    (">a\nMK\n>a\nMKV\n", "duplicate record id (first seen at {path}, line 1)", 3, "a"),
])
def test_shared_rules_name_both_records(tmp_path, content, needle, line, rid):
    path = write(tmp_path / "d.fa", content)
    with pytest.raises(FastaError) as e:
        list(fasta.validated_records(path))
    assert needle.format(path=path) in str(e.value)
    assert (e.value.path, e.value.line, e.value.record_id) == (path, line, rid)


def test_shared_rules_with_full_header_ids(tmp_path):
    path = write(tmp_path / "h.fa", ">a x.1\nMK\n>a x_1\nMK\n>a y\nMK\n")
    with pytest.raises(FastaError, match="duplicate record id"):
        list(fasta.validated_records(path))
    with pytest.raises(FastaError, match="name 'a x_1' .* already used by the record 'a x.1'") as e:
        list(fasta.validated_records(path, full_header_ids=True))
    assert e.value.line == 3
    ok = write(tmp_path / "ok.fa", ">a x\nMK\n>a y\nMK\n")
    assert [fasta.record_name(r, True) for r in fasta.validated_records(ok, full_header_ids=True)] == ["a x", "a y"]


@pytest.mark.parametrize("content, needle", [
    ("", "no records"),
    ("\n\n", "no records"),
    (">a\nMK\n>b\n>c\nMK\n", "empty sequence"),
    (">a\nMK\n>b\nMK\n>a\nMKV\n", "duplicate record id"),
    (">sp|P1.2\nMK\n>sp|P1_2\nMKV\n", "name 'sp|P1_2' ('/' and '.' become '_'"),
])
def test_validate_fasta_and_embed_refuse_the_same_files_alike(tmp_path, capsys, content, needle):
    from prottrans_jax import cli

    path = write(tmp_path / "bad.fa", content)
    errors = []
    for argv in (["validate-fasta", path],
                 ["embed", "--model", str(tmp_path / "model"), "--fasta", path, "--out", str(tmp_path / "e.h5")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and path in err
        errors.append(err.split(": error: ", 1)[1])
    assert errors[0] == errors[1]
    assert not (tmp_path / "e.h5").exists()


# ---------------------------------------------------------------------------------------
# Train/validation split.
# ---------------------------------------------------------------------------------------
def test_split_is_deterministic_across_processes():
    ids = [f"UniRef50_P{i:05d}" for i in range(200)]
    here = [split_of(i, 0.3) for i in ids]
    code = ("import sys; from prottrans_jax.fasta import split_of; "
            "print(' '.join(split_of(i, 0.3) for i in sys.argv[1:]))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, *ids], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == here
    assert set(here) == {"train", "validation"}
    assert [split_of(i, 0.3, salt="other") for i in ids] != here
    assert {split_of(i, 0.0) for i in ids} == {"train"} and {split_of(i, 1.0) for i in ids} == {"validation"}
    with pytest.raises(ValueError):
        split_of("a", 1.5)


def test_split_fraction_over_demo_corpus(demo_corpus, demo_records):
    fraction = 0.1
    val = list(read_fasta(demo_corpus, split="validation", validation_fraction=fraction))
    train = list(read_fasta(demo_corpus, split="train", validation_fraction=fraction))
    n = len(demo_records)
    assert sorted(r.id for r in val + train) == sorted(r.id for r in demo_records)
    sd = (n * fraction * (1 - fraction)) ** 0.5
    assert abs(len(val) - n * fraction) < 5 * sd
    assert all(split_of(r.id, fraction) == "validation" for r in val)
    with pytest.raises(ValueError):
        read_fasta(demo_corpus, split="test")


# ---------------------------------------------------------------------------------------
# Streaming, imports, URLs.
# ---------------------------------------------------------------------------------------
def test_first_record_of_huge_gzip_is_streamed(tmp_path, monkeypatch):
    line = b"ACDEFGHIKL" * 10 + b"\n"
    block = line * (1_000_000 // len(line))  # ~1 MB uncompressed, compresses to ~1 KB.
    member = gzip.compress(block)
    path = tmp_path / "huge.fa.gz"
    with open(path, "wb") as f:  # Concatenated gzip members form one valid gzip stream.
        f.write(gzip.compress(b">first a small one\nMKV\n>second 200 MB long\n"))
        for _ in range(200):
            f.write(member)
    total = 200 * len(block)
    read = []

    class CountingGzipFile(gzip.GzipFile):
        def read(self, size=-1):
            data = super().read(size)
            read.append(len(data))
            return data

    monkeypatch.setattr(gzip, "GzipFile", CountingGzipFile)
    tracemalloc.start()
    it = read_fasta(str(path))
    first = next(it)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    it.close()
    assert (first.id, first.sequence) == ("first", "MKV")
    assert 0 < sum(read) < total / 50
    assert peak < total / 20


def test_import_loads_neither_tensorflow_nor_jax():
    code = ("import sys, prottrans_jax.fasta; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'jax', 'seqio'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_url_paths_use_gfile_lazily(tmp_path, monkeypatch):
    """gs:// and other URLs go through tensorflow.io.gfile (a fake one here, mapping mem:// to tmp_path)."""
    text, truth = random_fasta(20, seed=5)
    write(tmp_path / "s-1.fa.gz", text, gz=True)
    write(tmp_path / "s-0.fa", ">first\nMK\n")
    local = lambda url: str(tmp_path / url[len("mem://"):])  # noqa: E731
    import glob as globlib

    gfile = types.SimpleNamespace(
        GFile=lambda url, mode: open(local(url), mode),
        exists=lambda url: os.path.exists(local(url)),
        glob=lambda url: ["mem://" + os.path.basename(p) for p in globlib.glob(local(url))])
    fake_tf = types.SimpleNamespace(io=types.SimpleNamespace(gfile=gfile),
                                    errors=types.SimpleNamespace(OpError=type("OpError", (Exception,), {})))
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf)
    records = list(read_fasta("mem://s-*.fa*"))
    assert [r.path for r in records] == ["mem://s-0.fa"] + ["mem://s-1.fa.gz"] * len(truth)
    assert [r.sequence for r in records] == ["MK"] + list(truth.values())
    with pytest.raises(FastaError):
        read_fasta("mem://missing.fa")


def test_record_is_frozen():
    rec = FastaRecord("a", "", "MK", "f.fa", 1)
    with pytest.raises(AttributeError):
        rec.sequence = "X"  # type: ignore[misc]
