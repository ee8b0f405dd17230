"""Test helper: damaged copies of an exported HF folder, and the CLI's one-line refusal of them."""

import json
import shutil

from prottrans_jax import cli


def folder_variant(good, dest, config_changes=None, tensors=None):
    """A copy of ``good`` at ``dest`` with ``config_changes`` merged into config.json and, if given,
    ``tensors(dict of the original safetensors) -> new dict`` written as its model.safetensors."""
    from safetensors.numpy import load_file, save_file

    folder = shutil.copytree(good, dest)
    hf_config = json.loads((good / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**hf_config, **(config_changes or {})}))
    if tensors is not None:
        save_file(tensors(load_file(good / "model.safetensors")), folder / "model.safetensors")
    return folder


def cli_refusal(capsys, out, argv):
    """Runs the CLI; asserts exit 2, exactly one line on stderr and nothing at ``out``; returns the line."""
    capsys.readouterr()
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and not out.exists(), err
    return err
