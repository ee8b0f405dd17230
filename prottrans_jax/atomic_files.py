"""Write-then-rename helpers: an output appears whole or not at all, and what was there is never half-replaced."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import uuid
from typing import Iterator


def _is_nonempty_dir(path: pathlib.Path) -> bool:
    return path.is_dir() and any(path.iterdir())


@contextlib.contextmanager
def atomic_directory(out_dir: str | pathlib.Path, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """Yields a temporary sibling folder to fill; on success it becomes ``out_dir`` in one rename.

    On an exception the temporary folder is removed and ``out_dir`` is left as it was.

    Raises:
      FileExistsError: ``out_dir`` exists and is not empty (unless ``overwrite``), or is a file.
    """
    out = pathlib.Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is a file, not a folder; choose another --out")
    if _is_nonempty_dir(out) and not overwrite:
        raise FileExistsError(f"{out}: folder exists and is not empty; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | pathlib.Path) -> Iterator[pathlib.Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path`` atomically (``os.replace``)."""
    final = pathlib.Path(path).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
