"""The prottrans-jax command line: outputs, exit codes and one-line errors."""

import json
import subprocess
import sys

import sentencepiece

from prottrans_jax import cli


def test_validate_fasta_reports_counts(demo_corpus, capsys):
    assert cli.main(["validate-fasta", str(demo_corpus)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == 14_400 and stats["max_length"] == 3_117


def test_bad_fasta_is_one_clear_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.fa"
    bad.write_text("MKV\n>x\nMKV\n")
    assert cli.main(["validate-fasta", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.fa" in err and "line 1" in err
    assert cli.main(["validate-fasta", str(tmp_path / "missing.fa")]) == 2
    assert "missing.fa" in capsys.readouterr().err


def test_write_tokenizer_and_preview(tmp_path, capsys):
    assert cli.main(["write-tokenizer", "--out", str(tmp_path)]) == 0
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    assert sp.get_piece_size() == 28 and sp.encode("M K V") == [19, 14, 6]
    assert cli.main(["preview", "--task", "demo_span_corruption", "--num", "2", "--length", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("[0]") for line in lines) == 2 and "<0>" in lines[-1]


def test_cli_and_fasta_validation_do_not_load_tensorflow(demo_corpus):
    code = (
        "import sys; from prottrans_jax import cli; "
        f"rc = cli.main(['validate-fasta', {str(demo_corpus)!r}]); "
        "assert rc == 0 and 'tensorflow' not in sys.modules and 'jax' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_train_subcommand_passes_gin_flags_through(capsys):
    assert cli.main(["train", "--gin_file=runs/prot_t5_tiny.gin"]) == 2
    assert "MODEL_DIR" in capsys.readouterr().err
