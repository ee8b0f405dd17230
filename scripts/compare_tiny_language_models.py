"""Tiny ProtT5, ProtTXL and ProtXLNet pretrained alike on the demo corpus, their embeddings through the heads.

For each family in ``--families`` (default: t5, txl, xlnet; all 2 layers of width 32, the tiny configs):
1. pretrain ``--steps`` steps on the real demo corpus (../shared/data/pretrain/demo_corpus.fasta.gz) with
   the family's own objective (ProtT5 denoising, causal LM with Transformer-XL memory, permutation LM),
   batch 32 x 256 tokens, the tiny run gin's optimizer;
2. embed per residue: DeepLoc's validation file and setHARD, the first ``--ss-train`` NetSurfP training
   chains and CB513;
3. train the localization heads (FNN on mean-pooled embeddings, light attention on the first ``--crop``
   residues; 10% of the validation file held out for early stopping) and ProtTrans' secondary-structure
   CNN, and report setHARD Q10, held-out Q2, CB513 Q3/Q8 with bootstrap SEs. ``--onehot`` adds the
   one-hot rows on the same training subsets.

Writes ``OUT/results.json`` and prints a Markdown table. CPU-2 (2 cores): about 15 minutes per family at
the defaults (more on a busy machine).

Usage: python scripts/compare_tiny_language_models.py [--families t5,txl,xlnet] [--steps 300] [--out results/tiny_lms]
"""

import argparse
import json
import pathlib
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

# family -> (run gin, objective, config name, feature lengths of a 256-token window)
FAMILIES = {
    "t5": ("runs/prot_t5_tiny.gin", "prot_t5_denoise", "prot_t5_tiny", "{'inputs': 256, 'targets': 256}"),
    "txl": ("runs/prot_txl_tiny.gin", "txl_causal_lm", "prot_txl_tiny", "{'inputs': 256, 'targets': 256}"),
    # XLNet's 'targets' length is the number of predicted positions: 1/6 of the window (k = 6).
    "xlnet": ("runs/prot_xlnet_tiny.gin", "xlnet_plm", "prot_xlnet_tiny", "{'inputs': 256, 'targets': 43}"),
}
LABEL = {"t5": "tiny ProtT5", "txl": "tiny ProtTXL", "xlnet": "tiny ProtXLNet", "onehot": "one-hot"}


def pretrain(family: str, steps: int, run: pathlib.Path) -> float:
    """Trains the family's tiny model on the demo corpus into ``run``; returns seconds."""
    from prottrans_jax import train

    gin_file, objective, config, lengths = FAMILIES[family]
    t0 = time.time()
    rc = train.main([f"--gin_file={gin_file}", f"--gin.MODEL_DIR='{run}'",
                     f"--gin.MIXTURE_OR_TASK_NAME='realdemo_{objective}'", f"--gin.TRAIN_STEPS={steps}",
                     "--gin.BATCH_SIZE=32", f"--gin.TASK_FEATURE_LENGTHS={lengths}",
                     f"--gin.configs.get_config.name='{config}'", "--gin.train_script.train.log_every=100",
                     f"--gin.train_script.train.checkpoint_every={steps}"])
    if rc != 0:
        raise SystemExit(f"pretraining {family} failed (exit {rc})")
    return time.time() - t0


def write_fasta(path: pathlib.Path, records) -> None:
    path.write_text("".join(f">p{i}\n{r.sequence}\n" for i, r in enumerate(records)))


def embeddings(run: pathlib.Path, name: str, fasta: pathlib.Path, ids, out: pathlib.Path):
    """Per-residue embeddings of ``fasta`` by the model in ``run``, in the order of ``ids``."""
    from prottrans_jax import embed
    from prottrans_jax.downstream import encodings

    h5 = out / f"{name}.h5"
    if not h5.exists():
        embed.embed_fasta(run, fasta, h5, per_residue=True, per_protein=False, progress=False)
    return encodings.h5_features(h5, ids)


def localization(train_f, test_f, val, hard, crop: int, epochs: int) -> dict:
    from prottrans_jax.downstream import protein_training as pt
    from prottrans_jax.downstream.residue_training import TrainConfig, split_validation
    from prottrans_jax.models.heads import LightAttention, LocalizationFNN

    config = TrainConfig(batch_size=64, max_epochs=epochs, patience=10, validation_fraction=0.1, learning_rate=3e-3)
    _, held_out = split_validation(len(val), config.validation_fraction, config.seed)
    out = {}
    for head_name, head in (("FNN", LocalizationFNN()), ("LA", LightAttention())):
        per_res = head_name == "LA"
        tf = [f[:crop] for f in train_f] if per_res else [f.mean(0) for f in train_f]
        xf = [f[:crop] for f in test_f] if per_res else [f.mean(0) for f in test_f]
        variables, history = pt.train_protein_head(tf, val, config, head, progress=False)
        hard_scores = pt.evaluate_protein_head(variables, head, xf, hard)
        held = pt.evaluate_protein_head(variables, head, [tf[i] for i in held_out], [val[i] for i in held_out])
        out[head_name] = {"setHARD_Q10": hard_scores["location"]["accuracy"],
                          "setHARD_Q10_se": hard_scores["location"]["se"],
                          "heldout_Q2": held["membrane"]["accuracy"], "heldout_Q2_se": held["membrane"]["se"],
                          "epochs": len(history)}
    return out


def secondary_structure(train_f, train, test_f, test, epochs: int) -> dict:
    from prottrans_jax.downstream import residue_training as rt
    from prottrans_jax.models.heads import SecondaryStructureCNN

    head = SecondaryStructureCNN()
    params, history = rt.train_residue_head(train_f, train, rt.TrainConfig(max_epochs=epochs), head, None)
    scores = rt.evaluate_residue_head(params, head, test_f, test)
    return {k: {m: scores[k][m] for m in ("accuracy", "se")} for k in ("dssp3", "dssp8")} | {"epochs": len(history)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="t5,txl,xlnet", help="comma-separated, from " + ", ".join(FAMILIES))
    p.add_argument("--steps", type=int, default=300, help="pretraining steps per family")
    p.add_argument("--ss-train", type=int, default=2000, help="NetSurfP training chains for the SS heads")
    p.add_argument("--ss-epochs", type=int, default=15)
    p.add_argument("--epochs", type=int, default=60, help="most epochs for the localization heads")
    p.add_argument("--crop", type=int, default=1000, help="residues light attention sees per protein")
    p.add_argument("--onehot", action="store_true", help="also the one-hot rows on the same subsets")
    p.add_argument("--out", default="results/tiny_lms")
    args = p.parse_args()
    out = pathlib.Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    families = [f for f in args.families.split(",") if f]

    import prottrans_jax_tasks
    from prottrans_jax.downstream import datasets, encodings

    prottrans_jax_tasks.register_fasta_tasks("realdemo", str(DATA / "pretrain" / "demo_corpus.fasta.gz"),
                                             objectives=tuple(FAMILIES[f][1] for f in families))
    val = datasets.read_deeploc_fasta(DATA / "deeploc" / "deeploc_our_val_set.fasta")
    hard = datasets.read_deeploc_fasta(DATA / "deeploc" / "setHARD.fasta")
    ss_train = datasets.read_netsurfp_csv(DATA / "netsurfp" / "Train_HHblits.csv.gz")[:args.ss_train]
    cb513 = datasets.read_netsurfp_csv(DATA / "netsurfp" / "CB513_HHblits.csv")
    for name, records in (("ss_train", ss_train), ("cb513", cb513)):
        write_fasta(out / f"{name}.fasta", records)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    rows = (["onehot"] if args.onehot else []) + families
    for family in rows:
        t0 = time.time()
        if family == "onehot":
            feats = {name: [encodings.one_hot(r.sequence) for r in recs]
                     for name, recs in (("val", val), ("hard", hard), ("ss_train", ss_train), ("cb513", cb513))}
            entry = {}
        else:
            run = out / family
            entry = {"pretrain_seconds": pretrain(family, args.steps, run) if not (run / "checkpoint_"
                     f"{args.steps}").exists() else None, "steps": args.steps}
            feats = {
                "val": embeddings(run, f"{family}_val", DATA / "deeploc" / "deeploc_our_val_set.fasta",
                                  [r.id for r in val], out),
                "hard": embeddings(run, f"{family}_hard", DATA / "deeploc" / "setHARD.fasta", [r.id for r in hard], out),
                "ss_train": embeddings(run, f"{family}_ss_train", out / "ss_train.fasta",
                                       [f"p{i}" for i in range(len(ss_train))], out),
                "cb513": embeddings(run, f"{family}_cb513", out / "cb513.fasta", [f"p{i}" for i in range(len(cb513))],
                                    out),
            }
        entry["localization"] = localization(feats["val"], feats["hard"], val, hard, args.crop, args.epochs)
        entry["secondary_structure"] = secondary_structure(feats["ss_train"], ss_train, feats["cb513"], cb513,
                                                           args.ss_epochs)
        entry["seconds"] = time.time() - t0
        results[family] = entry
        results_path.write_text(json.dumps(results, indent=2))
        print(f"{family}: done in {entry['seconds']:.0f} s", flush=True)

    print("| input | setHARD Q10 (FNN) | setHARD Q10 (LA) | held-out Q2 (FNN) | CB513 Q3 | CB513 Q8 |")
    print("|---|---:|---:|---:|---:|---:|")
    for family, e in results.items():
        loc, ss = e["localization"], e["secondary_structure"]
        pm = lambda d, k: f"{100 * d[k]:.1f} ± {100 * d[k + '_se']:.1f}"  # noqa: E731
        print(f"| {LABEL.get(family, family)} | {pm(loc['FNN'], 'setHARD_Q10')} | {pm(loc['LA'], 'setHARD_Q10')} | "
              f"{pm(loc['FNN'], 'heldout_Q2')} | {100 * ss['dssp3']['accuracy']:.1f} ± {100 * ss['dssp3']['se']:.1f} | "
              f"{100 * ss['dssp8']['accuracy']:.1f} ± {100 * ss['dssp8']['se']:.1f} |")


if __name__ == "__main__":
    main()
