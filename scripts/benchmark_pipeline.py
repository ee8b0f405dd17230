"""Data-pipeline throughput (residues/s) of each pretraining objective through the full seqio pipeline.

Task -> feature converter -> batching, at feature length 512, on a FASTA corpus (default: the real
demo corpus in ../shared/data). Residues counted are the non-padding residue tokens of the
model's target features, so special tokens and padding do not inflate the figure.

Usage: python scripts/benchmark_pipeline.py [--fasta PATH] [--seconds 20] [--batch-size 64]
"""

import argparse
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import prottrans_jax_tasks  # noqa: E402
from prottrans_jax import pipeline  # noqa: E402

DEFAULT_FASTA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain" / "demo_corpus.fasta.gz"


def residues_in(batch: dict, objective: str) -> int:
    """Residue tokens (no specials, sentinels or padding) carried by one batch."""
    if objective in ("bert_mlm", "electra"):
        return int(np.sum(batch["encoder_target_tokens"] >= 5))  # ProtBert ids 0-4 are specials
    if objective == "txl_causal_lm":
        return int(np.sum(batch["decoder_target_tokens"] >= 5))  # ProtBert's vocabulary too
    is_residue = lambda ids: (ids >= 3) & (ids < 28)  # ProtT5 residue ids  # noqa: E731
    count = int(np.sum(is_residue(batch["decoder_target_tokens"])))
    if objective == "span_corruption":  # the kept residues travel in the inputs
        count += int(np.sum(is_residue(batch["encoder_input_tokens"])))
    return count


def measure(task: str, length: int, batch_size: int, seconds: float, pack: bool) -> dict:
    ds = pipeline.get_dataset(task, length=length, batch_size=batch_size, seed=0, pack=pack)
    it = ds.as_numpy_iterator()
    for _ in range(5):  # warm-up: graph tracing, shuffle buffer fill
        next(it)
    start, residues, batches = time.perf_counter(), 0, 0
    while time.perf_counter() - start < seconds:
        batch = next(it)
        residues += residues_in(batch, pipeline.objective_of(task))
        batches += 1
    elapsed = time.perf_counter() - start
    return {"task": task, "residues_per_s": residues / elapsed, "examples_per_s": batches * batch_size / elapsed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", default=str(DEFAULT_FASTA))
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pack", action="store_true")
    parser.add_argument("--objectives", nargs="*", default=list(prottrans_jax_tasks.OBJECTIVES))
    args = parser.parse_args()
    prottrans_jax_tasks.register_fasta_tasks("bench", args.fasta, objectives=args.objectives)
    print(f"# {platform.node()} {platform.processor() or platform.machine()} cores={os.cpu_count()} "
          f"length={args.length} batch={args.batch_size} pack={args.pack} fasta={args.fasta}")
    print("| objective | residues/s | examples/s |\n|---|---:|---:|")
    for objective in args.objectives:
        r = measure(f"bench_{objective}", args.length, args.batch_size, args.seconds, args.pack)
        print(f"| {objective} | {r['residues_per_s']:,.0f} | {r['examples_per_s']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
