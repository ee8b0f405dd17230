"""The Colab notebooks run top to bottom on CPU with tiny settings (their settings cell replaced)."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from model_dirs import write_model_dir

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def _run(name, settings: str, cwd: pathlib.Path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# Settings")]
    assert len(cells) == 1, f"{name} needs exactly one '# Settings' cell"
    cells[0].source = "# Settings\n" + settings
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _outputs(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb") / "lm"
    write_model_dir(path, "t5")
    return path


def test_embed_and_predict_notebook(tmp_path, tiny_model, shared_data):
    nb = _run("embed_and_predict.ipynb", f"MODEL = {str(tiny_model)!r}\nDATA_DIR = {str(shared_data)!r}\n"
              "WORK = 'work'\nTRAIN_CHAINS = 30\nEPOCHS = 1\n", tmp_path)
    out = _outputs(nb)
    assert "ubiquitin" in out and "(76, 32)" in out
    assert (tmp_path / "work" / "prediction.residues.tsv").is_file()


def test_pretrain_notebook(tmp_path):
    nb = _run("pretrain_small.ipynb", "RUN = 'run'\nGIN = 'runs/prot_t5_tiny.gin'\nTASK = 'demo_prot_t5_denoise'\n"
              "STEPS = 4\nBATCH = 8\n", tmp_path)
    assert "max |difference|" in _outputs(nb)
    assert (tmp_path / "run_hf" / "model.safetensors").is_file()


def test_finetune_lora_notebook(tmp_path, tiny_model, shared_data):
    nb = _run("finetune_lora.ipynb", f"MODEL = {str(tiny_model)!r}\nDATA_DIR = {str(shared_data)!r}\n"
              "TRAIN_CHAINS = 16\nMAX_LENGTH = 100\nEPOCHS = 1\nBATCH = 8\n", tmp_path)
    out = _outputs(nb)
    assert "trainable parameters" in out and "CB513 (first" in out and "Q3 =" in out
