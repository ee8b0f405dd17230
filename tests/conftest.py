"""Test set-up: 8 fake CPU devices (before jax is imported) and paths to the shared real data."""

import atexit
import os
import pathlib
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# CLI runs cache their compilations in a folder of this session, not in the user's ~/.cache/prottrans_jax/xla.
if not os.environ.get("PROTTRANS_JAX_COMPILE_CACHE"):
    os.environ["PROTTRANS_JAX_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="prottrans_jax_xla_")
    atexit.register(shutil.rmtree, os.environ["PROTTRANS_JAX_COMPILE_CACHE"], ignore_errors=True)

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("PROTTRANS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data: the real corpora, benchmarks and released tokenizer files."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(
            f"real test data not found at {SHARED_DATA}; set PROTTRANS_SHARED_DATA to the shared/data folder"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_corpus(shared_data) -> pathlib.Path:
    return shared_data / "pretrain" / "demo_corpus.fasta.gz"
