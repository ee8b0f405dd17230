"""Reproduces the paper's single-sequence secondary-structure baselines on NetSurfP-2.0 (CB513, TS115).

Trains ProtTrans' CNN (Conv 21->32 k7, ReLU, dropout 0.25, Conv 32->3/8/2 k7) on one-hot (or
BLOSUM62) encodings of ../shared/data/netsurfp/Train_HHblits.csv.gz with a seeded 5% validation
split and early stopping on validation Q3, then reports Q3/Q8 (resolved residues; CB513's mask) with
bootstrap standard errors. ``--depth`` and ``--hidden`` give the stronger, deeper CNN baseline.

Usage: python scripts/reproduce_downstream.py [--encoding onehot] [--depth 0] [--hidden 32] [--out results/ss_onehot]
"""

import argparse
import json
import pathlib
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "netsurfp"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoding", default="onehot", choices=("onehot", "blosum62"))
    p.add_argument("--depth", type=int, default=0, help="extra Conv(hidden->hidden) layers (0: the paper's CNN)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--kernel-size", type=int, default=7)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for the head and results.json")
    args = p.parse_args()

    from prottrans_jax.downstream import datasets, encodings, residue_training as rt
    from prottrans_jax.models.heads import SecondaryStructureCNN

    train = datasets.read_netsurfp_csv(DATA / "Train_HHblits.csv.gz")
    tests = {name: datasets.read_netsurfp_csv(DATA / f"{name}_HHblits.csv") for name in ("CB513", "TS115")}
    head = SecondaryStructureCNN(hidden=args.hidden, kernel_size=args.kernel_size, depth=args.depth)
    t0 = time.time()
    params, history = rt.train_residue_head(
        encodings.baseline_features(args.encoding, [r.sequence for r in train]), train,
        rt.TrainConfig(learning_rate=args.lr, max_epochs=args.epochs, seed=args.seed), head, args.out)
    results = {"encoding": args.encoding, "head": rt.head_settings(head), "epochs_run": len(history),
               "best_epoch": max(history, key=lambda h: h["val_q3"])["epoch"], "train_seconds": time.time() - t0,
               "history": history}
    for name, data in tests.items():
        scores = rt.evaluate_residue_head(params, head, encodings.baseline_features(args.encoding,
                                                                                   [r.sequence for r in data]), data)
        results[name] = {k: {m: scores[k][m] for m in ("accuracy", "se", "mcc", "residues", "chains")}
                         for k in ("dssp3", "dssp8")}
        print(f"{name}: Q3 {100 * scores['dssp3']['accuracy']:.1f} +- {100 * scores['dssp3']['se']:.1f}  "
              f"Q8 {100 * scores['dssp8']['accuracy']:.1f} +- {100 * scores['dssp8']['se']:.1f}  "
              f"({scores['dssp3']['residues']} residues, {scores['dssp3']['chains']} chains)", flush=True)
    if args.out:
        pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
