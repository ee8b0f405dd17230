"""One overwrite rule: a second run refuses an existing output (exit 2, one line, output untouched) unless
``--overwrite``, which replaces it whole."""

from __future__ import annotations

import json
import pathlib

import pytest

from prottrans_jax import atomic_files, cli

SHIPPED_HEAD = pathlib.Path(__file__).resolve().parents[1] / "prottrans_jax" / "data" / "heads" / "ss_onehot_cnn"


def _snapshot(path: pathlib.Path) -> dict:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files}


def _refused(argv, output: pathlib.Path, capsys) -> None:
    """A rerun without --overwrite: exit 2, one line naming ``output`` and --overwrite, output byte-identical."""
    before = _snapshot(output)
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(output) in err and "--overwrite" in err
    assert _snapshot(output) == before and before


def test_refuse_existing_names_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    atomic_files.refuse_existing([tmp_path / "new.txt", tmp_path / "empty"], False, "thing")  # nothing there yet
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(FileExistsError, match=r"f\.txt: the thing exists; .*--overwrite"):
        atomic_files.refuse_existing([tmp_path / "new.txt", tmp_path / "f.txt"], False, "thing")
    atomic_files.refuse_existing(tmp_path / "f.txt", True, "thing")


def test_predict(tmp_path, capsys):
    query = tmp_path / "q.fasta"
    query.write_text(">a\nMKVLAAGIVG\n")
    argv = ["predict", "--fasta", str(query), "--head", str(SHIPPED_HEAD), "--out", str(tmp_path / "p")]
    assert cli.main(argv) == 0
    stale = tmp_path / "p.proteins.tsv"  # as an earlier run with a localization head would have left
    stale.write_text("stale\n")
    _refused(argv, tmp_path / "p.json", capsys)
    query.write_text(">b\nGSHMSEQWLLKA\n")
    assert cli.main(argv + ["--overwrite"]) == 0
    assert list(json.loads((tmp_path / "p.json").read_text())) == ["b"]
    assert "\nb\t1\tG\t" in (tmp_path / "p.residues.tsv").read_text() and not stale.exists()


def test_heads_train_evaluate_and_fasta(tmp_path, shared_data, capsys):
    lines = (shared_data / "netsurfp" / "CB513_HHblits.csv").read_text().splitlines()
    data = tmp_path / "cb.csv"
    data.write_text("\n".join(lines[:9]) + "\n")
    head = tmp_path / "head"
    train = ["heads", "train", "--task", "secondary-structure", "--data", str(data), "--epochs", "1",
             "--batch-size", "4", "--out", str(head)]
    assert cli.main(train) == 0
    evaluate = ["heads", "evaluate", "--head", str(head), "--data", str(data)]
    assert cli.main(evaluate) == 0
    report = head / "report_cb"
    _refused(evaluate, report, capsys)
    (report / "report.md").write_text("stale")
    assert cli.main(evaluate + ["--overwrite"]) == 0
    assert (report / "report.md").read_text().startswith("# secondary-structure head")

    _refused(train, head, capsys)
    train[train.index("--epochs") + 1] = "2"
    assert cli.main(train + ["--overwrite"]) == 0
    assert len(json.loads((head / "history.json").read_text())) == 2
    assert not list(head.glob("report_*")) and not list(tmp_path.glob(".head*"))  # replaced whole, nothing left

    fasta = ["heads", "fasta", "--task", "secondary-structure", "--data", str(data), "--out", str(tmp_path / "s.fa")]
    assert cli.main(fasta) == 0
    _refused(fasta, tmp_path / "s.fa", capsys)
    (tmp_path / "s.fa").write_text(">stale\nM\n")
    assert cli.main(fasta + ["--overwrite"]) == 0
    assert (tmp_path / "s.fa").read_text().count(">cb_") == 8


@pytest.mark.parametrize("family, name", [("prot_t5", "spiece.model"), ("prot_bert", "vocab.txt")])
def test_write_tokenizer(tmp_path, capsys, family, name):
    argv = ["write-tokenizer", "--family", family, "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    good = (tmp_path / name).read_bytes()
    _refused(argv, tmp_path / name, capsys)
    (tmp_path / name).write_bytes(b"stale")
    assert cli.main(argv + ["--overwrite"]) == 0
    assert (tmp_path / name).read_bytes() == good
