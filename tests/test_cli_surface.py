"""What a new user meets first: every --help, corrupt weights, export messages and file modes, overwrite rules."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import transformers

from model_dirs import write_fasta, write_model_dir
from prottrans_jax import cli, model_io


def _subcommand_parsers(parser: argparse.ArgumentParser, prefix=()):
    """Every (command words, parser) pair under ``parser``, nested ones (heads train ...) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _subcommand_parsers(sub, prefix + (name,))


COMMANDS = [words for words, _ in _subcommand_parsers(cli.build_parser())]


def test_the_command_list_covers_every_documented_subcommand():
    top = {w[0] for w in COMMANDS}
    assert {"validate-fasta", "preview", "quickstart", "train", "export-hf", "import-hf", "embed", "predict",
            "heads"} <= top
    assert ("heads", "train") in COMMANDS and ("heads", "evaluate") in COMMANDS


@pytest.mark.parametrize("words", [w for w in COMMANDS if w != ("train",)], ids=" ".join)
def test_every_subcommand_help_prints_every_option_with_help_and_default(words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*words, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: prottrans-jax " + " ".join(words))
    parser = dict(_subcommand_parsers(cli.build_parser()))[words]
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"{' '.join(words)} {action.option_strings[0]} has no help text"
        assert action.option_strings[-1] in text
        if not any(action.default is v for v in (None, False, True, argparse.SUPPRESS)):
            assert f"default: {action.default}" in " ".join(text.split()), \
                f"{action.option_strings[0]}: default {action.default!r} not shown"


@pytest.mark.parametrize("argv", [["-m", "prottrans_jax.train", "--help"], ["-m", "prottrans_jax.cli", "train", "--help"]])
def test_train_help_lists_the_flags_in_both_spellings(argv):
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for flag in ("--gin_file", "--gin.NAME=VALUE", "--gin_bindings", "--gin_search_paths", "MODEL_DIR", "example"):
        assert flag in done.stdout
    assert "Traceback" not in done.stderr


def test_main_help_names_the_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "embed" in out and "export-hf" in out and "COMMAND --help" in out


@pytest.fixture(scope="module")
def tiny_t5_hf(tmp_path_factory):
    """A tiny T5 training directory and its full HF export."""
    root = tmp_path_factory.mktemp("t5")
    write_model_dir(root / "run", "t5")
    assert cli.main(["export-hf", "--checkpoint", str(root / "run"), "--out", str(root / "hf")]) == 0
    return root


def _corrupt_copy(src, dst, how):
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            data = f.read_bytes()
            if f.name == "model.safetensors":
                data = data[: len(data) // 2] if how == "truncated" else b"\x07garbage" + data[8:]
            (dst / f.name).write_bytes(data)
    return dst


@pytest.mark.parametrize("how", ["truncated", "corrupt header"])
def test_a_damaged_safetensors_file_is_one_clear_error_in_embed_and_export(tiny_t5_hf, tmp_path, capsys, how):
    bad = _corrupt_copy(tiny_t5_hf / "hf", tmp_path / "bad_hf", how)
    fasta_path = write_fasta(tmp_path / "in.fa", {"a": "MKVLA"})
    out = tmp_path / "e.h5"
    assert cli.main(["embed", "--model", str(bad), "--fasta", str(fasta_path), "--out", str(out),
                     "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(bad / "model.safetensors") in err and "truncated or corrupt" in err
    assert not out.exists()
    assert cli.main(["export-hf", "--checkpoint", str(bad), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors" in err and "truncated or corrupt" in err
    assert not (tmp_path / "again").exists()


def test_encoder_only_export_says_what_it_wrote_with_readable_files(tiny_t5_hf, tmp_path, capsys):
    out = tmp_path / "enc"
    assert cli.main(["export-hf", "--checkpoint", str(tiny_t5_hf / "run"), "--out", str(out),
                     "--encoder-only"]) == 0
    said = capsys.readouterr().out
    assert "T5EncoderModel" in said and "T5ForConditionalGeneration" not in said
    assert json.loads((out / "config.json").read_text())["architectures"] == ["T5EncoderModel"]
    umask = os.umask(0)
    os.umask(umask)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in out.iterdir() if f.is_file()}
    assert modes["model.safetensors"] == 0o666 & ~umask, modes
    assert len(set(modes.values())) == 1, modes  # every file the same mode


def test_full_t5_export_loads_untied_and_the_cli_explains_transformers_warning(tiny_t5_hf, tmp_path, capsys):
    """transformers 5's T5Config forces tie_word_embeddings=True, so it warns about every distinct lm_head
    (Rostlab's ProtT5 too) and then does not tie: the weights must load untied and exactly ours."""
    hf = tiny_t5_hf / "hf"
    assert json.loads((hf / "config.json").read_text())["tie_word_embeddings"] is False
    model, info = transformers.T5ForConditionalGeneration.from_pretrained(hf, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    ours = model_io.load_model(tiny_t5_hf / "run").params["decoder"]["logits_dense"]["kernel"]
    np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(), np.asarray(ours).T)
    assert cli.main(["export-hf", "--checkpoint", str(tiny_t5_hf / "run"), "--out", str(tmp_path / "again")]) == 0
    assert "will NOT tie them" in capsys.readouterr().out  # the note names the warning a user will see


def test_encoder_only_t5_export_loads_without_any_warning(tiny_t5_hf, tmp_path):
    out = tmp_path / "enc"
    assert cli.main(["export-hf", "--checkpoint", str(tiny_t5_hf / "run"), "--out", str(out), "--encoder-only"]) == 0
    code = f"import transformers; transformers.T5EncoderModel.from_pretrained({str(out)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TRANSFORMERS_VERBOSITY="warning"))
    assert done.returncode == 0, done.stderr
    assert "tie" not in done.stderr.lower() and "warn" not in done.stderr.lower(), done.stderr


def test_import_hf_refuses_an_existing_run_unless_overwrite(tiny_t5_hf, tmp_path, capsys):
    target = tmp_path / "imported"
    assert cli.main(["import-hf", "--hf", str(tiny_t5_hf / "hf"), "--out", str(target)]) == 0
    (target / "notes.txt").write_text("mine")
    before = sorted(p.name for p in target.iterdir())
    capsys.readouterr()
    assert cli.main(["import-hf", "--hf", str(tiny_t5_hf / "hf"), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(target) in err
    assert sorted(p.name for p in target.iterdir()) == before
    assert cli.main(["import-hf", "--hf", str(tiny_t5_hf / "hf"), "--out", str(target), "--overwrite"]) == 0
    assert (target / "checkpoint_0").is_dir() and not (target / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_export_embedding_and_downstream_do_not_import_the_trainer():
    """Reading checkpoints lives in hf/checkpoint_reader.py; the trainer's manager stays with the trainer."""
    code = ("import sys\n"
            "import prottrans_jax.model_io, prottrans_jax.embed, prottrans_jax.hf.export, prottrans_jax.hf.import_to_orbax\n"
            "import prottrans_jax.downstream.predict, prottrans_jax.downstream.heads_cli\n"
            "training = ['prottrans_jax.' + m for m in ('checkpoints', 'trainer', 'training_loop', 'optimizers',"
            " 'objectives', 'pipeline', 'train')]\n"
            "print(sorted(m for m in training if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
