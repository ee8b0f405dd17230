"""Write-then-rename helpers: an output appears whole or not at all, and what was there is never half-replaced."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import uuid
from typing import Iterable, Iterator


def _is_nonempty_dir(path: pathlib.Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def refuse_existing(paths: str | os.PathLike | Iterable[str | os.PathLike], overwrite: bool, what: str) -> None:
    """The one overwrite rule of every command that writes: an existing output is refused unless ``--overwrite``.

    A file counts as existing; so does a folder that is not empty (an empty one is simply filled).

    Args:
      paths: the output file(s) or folder(s) a command is about to write.
      overwrite: the command's ``--overwrite``.
      what: what the output is, for the message (e.g. 'prediction', 'head folder').

    Raises:
      FileExistsError: naming the first existing path and ``--overwrite``.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    for path in map(pathlib.Path, items):
        if overwrite or not (path.exists() and (not path.is_dir() or _is_nonempty_dir(path))):
            continue
        state = "exists and is not empty" if path.is_dir() else "exists"
        raise FileExistsError(f"{path}: the {what} {state}; choose another output path, or pass --overwrite "
                              "to replace it")


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
    refuse_existing(out, overwrite, "output folder")
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
