"""Localization (Q10) and membrane (Q2): one-hot baselines vs embeddings of a tiny ProtT5 pretrained on the demo corpus.

1. Pretrains a small ProtT5 (``--config``, default prot_t5_tiny) on the real demo corpus
   (../shared/data/pretrain/demo_corpus.fasta.gz) with the ProtT5 denoising objective.
2. Embeds the DeepLoc validation file (the training data here, with a seeded 10% split for early
   stopping) and setHARD (the test set; it has no membrane labels, so Q2 is reported on the held-out
   10% of the validation file).
3. Trains the FNN (mean-pooled inputs; for one-hot that is the amino-acid composition) and light
   attention (on the first ``--crop`` residues) on one-hot and on the embeddings, and reports Q10/Q2
   with bootstrap SEs. Q2 is measured on the held-out 10%, which also chose the early-stopping epoch.

Usage: python scripts/reproduce_localization.py [--steps 3000] [--out results/localization]
"""

import argparse
import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--config", default="prot_t5_tiny")
    p.add_argument("--out", default="results/localization")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--crop", type=int, default=1000, help="residues light attention sees per protein")
    args = p.parse_args()
    out = pathlib.Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np

    import prottrans_jax_tasks
    from prottrans_jax import embed, train
    from prottrans_jax.downstream import datasets, encodings, protein_training as pt
    from prottrans_jax.downstream.residue_training import TrainConfig, split_validation
    from prottrans_jax.models.heads import LightAttention, LocalizationFNN

    prottrans_jax_tasks.register_fasta_tasks("realdemo", str(DATA / "pretrain" / "demo_corpus.fasta.gz"),
                                             objectives=("prot_t5_denoise",))
    run = out / "lm"
    rc = train.main(["--gin_file=runs/prot_t5_tiny.gin", f"--gin.MODEL_DIR='{run}'",
                     "--gin.MIXTURE_OR_TASK_NAME='realdemo_prot_t5_denoise'", f"--gin.TRAIN_STEPS={args.steps}",
                     "--gin.BATCH_SIZE=32", "--gin.TASK_FEATURE_LENGTHS={'inputs': 256, 'targets': 256}",
                     f"--gin.configs.get_config.name='{args.config}'", "--gin.train_script.train.log_every=100",
                     "--gin.train_script.train.checkpoint_every=1000"])
    assert rc == 0
    val = datasets.read_deeploc_fasta(DATA / "deeploc" / "deeploc_our_val_set.fasta")
    hard = datasets.read_deeploc_fasta(DATA / "deeploc" / "setHARD.fasta")
    for name, path in (("val", DATA / "deeploc" / "deeploc_our_val_set.fasta"), ("hard", DATA / "deeploc" / "setHARD.fasta")):
        embed.embed_fasta(run, path, out / f"{name}.h5", per_residue=True, per_protein=False, progress=False)
    feats = {
        "onehot": ([encodings.one_hot(r.sequence) for r in val], [encodings.one_hot(r.sequence) for r in hard]),
        "tiny ProtT5": (encodings.h5_features(out / "val.h5", [r.id for r in val]),
                        encodings.h5_features(out / "hard.h5", [r.id for r in hard])),
    }
    config = TrainConfig(batch_size=64, max_epochs=args.epochs, patience=10, validation_fraction=0.1,
                         learning_rate=3e-3)
    _, held_out = split_validation(len(val), config.validation_fraction, config.seed)
    results = {}
    for input_name, (train_f, test_f) in feats.items():
        for head_name, head in (("FNN", LocalizationFNN()), ("LA", LightAttention())):
            per_res = head_name == "LA"
            # Light attention sees the first --crop residues (bounded padding); the FNN pools whole proteins.
            tf = [f[:args.crop] for f in train_f] if per_res else [f.mean(0) for f in train_f]
            xf = [f[:args.crop] for f in test_f] if per_res else [f.mean(0) for f in test_f]
            variables, history = pt.train_protein_head(tf, val, config, head, progress=False)
            hard_scores = pt.evaluate_protein_head(variables, head, xf, hard)
            held = pt.evaluate_protein_head(variables, head, [tf[i] for i in held_out], [val[i] for i in held_out])
            key = f"{input_name} + {head_name}"
            results[key] = {
                "setHARD_Q10": hard_scores["location"]["accuracy"], "setHARD_Q10_se": hard_scores["location"]["se"],
                "heldout_Q10": held["location"]["accuracy"], "heldout_Q2": held["membrane"]["accuracy"],
                "heldout_Q2_se": held["membrane"]["se"], "epochs": len(history),
            }
            r = results[key]
            print(f"{key:24s} setHARD Q10 {100 * r['setHARD_Q10']:.1f} +- {100 * r['setHARD_Q10_se']:.1f}   "
                  f"held-out Q10 {100 * r['heldout_Q10']:.1f}  Q2 {100 * r['heldout_Q2']:.1f} +- "
                  f"{100 * r['heldout_Q2_se']:.1f}", flush=True)
    majority = np.bincount([r.location for r in hard], minlength=10).max() / len(hard)
    results["setHARD majority class"] = float(majority)
    print(f"setHARD majority-class Q10: {100 * majority:.1f}")
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
