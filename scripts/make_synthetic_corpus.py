"""Writes the small deterministic synthetic corpus shipped as the quickstart default.

The sequences are NOT real proteins: residues come from a first-order Markov chain over the 20
amino acids (UniProt background frequencies, sharpened random transitions) with a few recurring
motifs, so a tiny model has something to learn. Real data for tests and benchmarks lives in
../shared/data. Usage: python scripts/make_synthetic_corpus.py [--out PATH] [--num 2000]
"""

import argparse
import gzip
import io
import pathlib

import numpy as np

# UniProtKB/Swiss-Prot amino-acid composition (%), in alphabetical one-letter order.
BACKGROUND = {
    "A": 8.25, "C": 1.38, "D": 5.46, "E": 6.72, "F": 3.86, "G": 7.07, "H": 2.27, "I": 5.91, "K": 5.80, "L": 9.65,
    "M": 2.41, "N": 4.06, "P": 4.74, "Q": 3.93, "R": 5.53, "S": 6.63, "T": 5.35, "V": 6.86, "W": 1.10, "Y": 2.92,
}
MOTIFS = ["GXGXXG", "HEXXH", "CXXC", "NPA", "DEAD", "GKST", "WXXW"]


def synthetic_sequences(num: int, seed: int = 20211001):
    rng = np.random.default_rng(seed)
    letters = np.array(list(BACKGROUND))
    p = np.array(list(BACKGROUND.values()))
    p = p / p.sum()
    transitions = rng.dirichlet(p * 20, size=len(letters))  # [20, 20], rows sum to 1
    for i in range(num):
        length = int(np.clip(rng.lognormal(5.4, 0.55), 30, 1500))
        seq = ["M"]
        state = int(rng.choice(len(letters), p=p))
        while len(seq) < length:
            if rng.random() < 0.01:
                motif = MOTIFS[rng.integers(len(MOTIFS))]
                seq.extend(letters[rng.integers(20)] if c == "X" else c for c in motif)
                continue
            state = int(rng.choice(len(letters), p=transitions[state]))
            seq.append(letters[state])
        yield f"synthetic_{i:05d}", "".join(seq[:length])


def main():
    default_out = pathlib.Path(__file__).resolve().parents[1] / "prottrans_jax" / "data" / "synthetic_corpus.fasta.gz"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(default_out))
    parser.add_argument("--num", type=int, default=2000)
    args = parser.parse_args()
    text = io.StringIO()
    for name, seq in synthetic_sequences(args.num):
        text.write(f">{name} synthetic Markov-chain sequence, not a real protein\n")
        for start in range(0, len(seq), 60):
            text.write(seq[start : start + 60] + "\n")
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(text.getvalue().encode())
    print(f"wrote {args.num} sequences to {args.out}")


if __name__ == "__main__":
    main()
