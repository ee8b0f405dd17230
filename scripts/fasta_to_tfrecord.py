"""Converts FASTA (plain/gzip, globs) to TFRecord shards for the fast, Python-free input path.

Usage: python scripts/fasta_to_tfrecord.py --fasta '/data/uniref50_*.fasta.gz' --out-prefix /data/tfrecords/uniref50 --num-shards 256
Then register the tasks with prottrans_jax_tasks.register_tfrecord_tasks(
    "uniref50_tfr", {"train": "/data/tfrecords/uniref50-train.tfrecord-*", "validation": "/data/tfrecords/uniref50-validation.tfrecord-*"}).
"""

import argparse

from prottrans_jax import data_sources


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", required=True, help="FASTA path or glob")
    parser.add_argument("--out-prefix", required=True)
    parser.add_argument("--num-shards", type=int, default=16)
    parser.add_argument("--validation-fraction", type=float, default=0.005)
    args = parser.parse_args()
    written = data_sources.fasta_to_tfrecords(args.fasta, args.out_prefix, args.num_shards, args.validation_fraction)
    for split, paths in written.items():
        print(f"{split}: {len(paths)} shards, e.g. {paths[0]}")


if __name__ == "__main__":
    main()
