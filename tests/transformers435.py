"""Test fixture: a throwaway environment with transformers 4.35.2, the last release with TransfoXL.

A virtual environment (no pip of its own: ours installs into it) under the user's cache, keyed by the
pins, this Python and this venv's site-packages, so a warm cache costs nothing. transformers, tokenizers
and huggingface_hub are installed with ``--no-deps``: everything else they import (torch above all,
numpy, safetensors, regex, ...) is read from our venv through a ``.pth`` line placed after the
environment's own site-packages, so 4.35 shadows our transformers 5 and no other torch is ever installed.
(``venv --system-site-packages`` would not do: made from a venv's python it exposes the base
interpreter's packages, not the venv's.) Needs the package index once per machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

PINS = ("transformers==4.35.2", "tokenizers==0.15.2", "huggingface_hub==0.19.4")
READY = "prottrans_jax_ready.json"


def _cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "prottrans_jax"


def _parent_site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _key() -> str:
    import torch

    parts = [*PINS, sys.version, sys.executable, torch.__version__, *_parent_site_packages()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _run(cmd: list[str], what: str, timeout: int) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{what} failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return result


def _build(path: pathlib.Path) -> None:
    """Creates the environment at ``path`` (built beside it, renamed into place when complete)."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--without-pip", str(tmp)], "creating the transformers 4.35 venv", 120)
    python = tmp / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                "locating its site-packages", 60).stdout.strip()
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", *PINS],
         f"pip install --no-deps {' '.join(PINS)}", 900)
    # After the environment's own site-packages: our torch, numpy, safetensors, ... (not our transformers).
    (pathlib.Path(site) / "_prottrans_jax_parent.pth").write_text("\n".join(_parent_site_packages()) + "\n")
    check = ("import json, torch, transformers, tokenizers, huggingface_hub; print(json.dumps({m.__name__: "
             "m.__version__ for m in (torch, transformers, tokenizers, huggingface_hub)}))")
    versions = json.loads(_run([str(python), "-c", check], "importing transformers 4.35", 300).stdout.splitlines()[-1])
    import torch

    assert versions["torch"] == torch.__version__, versions  # our torch, not another one
    assert [f"{m}=={versions[m]}" for m in ("transformers", "tokenizers", "huggingface_hub")] == list(PINS), versions
    (tmp / READY).write_text(json.dumps(versions, indent=2) + "\n")
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """One builder at a time (pytest-xdist workers share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def transformers435_python() -> pathlib.Path:
    """The python of the transformers 4.35.2 environment (built on first use, then reused)."""
    path = _cache_root() / f"transformers435-venv-{_key()}"
    if not (path / READY).is_file():
        with _locked(path):
            if not (path / READY).is_file():
                _build(path)
    return path / "bin" / "python"


def run_reference(python: pathlib.Path, script: pathlib.Path, *args: str, timeout: int = 600) -> None:
    """Runs ``script`` in the 4.35 environment offline (no hub access); fails the test with its stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([str(python), str(script), *args], capture_output=True, text=True, timeout=timeout,
                            env=env)
    assert result.returncode == 0, f"{script.name} in transformers 4.35 failed:\n{result.stderr[-4000:]}"
