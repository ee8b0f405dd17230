"""Test helper: the embed tests' shared fixtures (a tiny T5 training directory, real proteins) and HDF5 reader."""

import h5py
import pytest

from model_dirs import write_model_dir
from proteins import read_proteins


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("t5") / "run"
    write_model_dir(path, "t5")
    return path


@pytest.fixture(scope="module")
def proteins(demo_corpus):
    return read_proteins(demo_corpus, 400)


def read_h5(path):
    """``(datasets, file attributes, dataset attributes)`` of an embedding file."""
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f}, dict(f.attrs), {k: dict(f[k].attrs) for k in f}
