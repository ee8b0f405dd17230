"""JAX's persistent compilation cache for the CLI: compiled shapes are reused by later runs instead of recompiled."""

from __future__ import annotations

import argparse
import os
import pathlib

ENV = "PROTTRANS_JAX_COMPILE_CACHE"


def default_dir() -> str:
    """``$PROTTRANS_JAX_COMPILE_CACHE``, else ``$XDG_CACHE_HOME/prottrans_jax/xla`` (``~/.cache/prottrans_jax/xla``)."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "prottrans_jax", "xla")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--compile-cache DIR`` and ``--no-compile-cache`` to a subcommand's parser."""
    parser.add_argument("--compile-cache", default=default_dir(), metavar="DIR",
                        help=f"folder of JAX's persistent compilation cache: a later run with the same shapes loads "
                             f"them instead of compiling (${ENV} if set, else ~/.cache/prottrans_jax/xla; use "
                             "only folders no one else can write to)")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="compile everything afresh and write nothing to the compilation cache")


def configure(args: argparse.Namespace) -> None:
    """Points JAX's persistent cache at ``args.compile_cache`` (every compilation, however quick), or turns it off.

    Call before the first compilation. Args without the options (another subcommand) leave JAX as it is.
    """
    if not hasattr(args, "no_compile_cache"):
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    folder = None if args.no_compile_cache else str(pathlib.Path(args.compile_cache).expanduser().absolute())
    if folder == jax.config.jax_compilation_cache_dir and (folder is not None) == jax.config.jax_enable_compilation_cache:
        return
    if folder is not None:
        os.makedirs(folder, exist_ok=True)
        # JAX caches only compilations over 1 s by default; each of embed's length buckets takes less on CPU.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_enable_compilation_cache", folder is not None)
    jax.config.update("jax_compilation_cache_dir", folder)
    compilation_cache.reset_cache()  # JAX opens its cache once per process: reopen it at the new folder
