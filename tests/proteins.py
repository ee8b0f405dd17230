"""Test helper: real protein sequences read with plain Python (independent of prottrans_jax.fasta)."""

import gzip


def read_proteins(path, n):
    """First ``n`` sequences of a gzipped FASTA file."""
    seqs, cur = [], []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                if cur:
                    seqs.append("".join(cur))
                    if len(seqs) == n:
                        return seqs
                cur = []
            else:
                cur.append(line.strip())
    if cur and len(seqs) < n:
        seqs.append("".join(cur))
    return seqs
