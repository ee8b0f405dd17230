"""``prottrans-jax heads train|evaluate|fasta``: downstream heads from the command line."""

from __future__ import annotations

import json
import pathlib

from prottrans_jax import compile_cache

TASKS = ("secondary-structure", "localization")


def _read(task: str, path: str):
    from prottrans_jax.downstream import datasets

    return datasets.read_netsurfp_csv(path) if task == "secondary-structure" else datasets.read_deeploc_fasta(path)


def build_head(task: str, head: str, settings: dict):
    """The Linen head for a task and name ('cnn'; 'fnn' or 'la')."""
    from prottrans_jax.models import heads

    if task == "secondary-structure":
        return heads.SecondaryStructureCNN(**settings)
    cls = {"fnn": heads.LocalizationFNN, "la": heads.LightAttention}[head]
    return cls(**{k: v for k, v in settings.items() if k in cls.__dataclass_fields__})


def takes_residues(task: str, head_name: str) -> bool:
    """Whether a task's head reads per-residue features (the CNN and light attention) or pooled ones (FNN)."""
    return task == "secondary-structure" or head_name == "la"


def checked_features(spec: str, ids, sequences, per_residue: bool, head_dir=None, trained=None):
    """``(features, provenance)`` of a ``--features`` spec for ``sequences``.

    With a trained head's provenance (``trained``), features that differ from what the head was trained on
    are refused, before a model is loaded where the kind of features already differs, and before
    anything is embedded.
    """
    from prottrans_jax import model_io
    from prottrans_jax.downstream import inputs, provenance

    kind, where = inputs.parse_spec(spec)
    if trained is not None:
        provenance.check_compatible(head_dir, trained, {"features": kind})
    loaded = model_io.load_model(where) if kind == "model" else None
    actual = provenance.features_provenance(spec, loaded, per_residue=per_residue,
                                            layer=trained.get("layer") if trained else None)
    if trained is not None:
        provenance.check_compatible(head_dir, trained, actual)
    feats = inputs.features_for(spec, ids, sequences, per_residue, model=loaded, layer=actual.get("layer"))
    return feats, actual


def cmd_train(args) -> int:
    from prottrans_jax import atomic_files
    from prottrans_jax.downstream import protein_training, residue_training

    out = pathlib.Path(args.out)
    atomic_files.refuse_existing(out, args.overwrite, "head folder")
    task = args.task
    head_name = args.head or ("cnn" if task == "secondary-structure" else "fnn")
    settings = {k: v for k, v in (("hidden", args.hidden), ("depth", args.depth)) if v is not None}
    head = build_head(task, head_name, settings)
    records = _read(task, args.data)
    feats, provenance = checked_features(args.features, [r.id for r in records], [r.sequence for r in records],
                                         takes_residues(task, head_name))
    config = residue_training.TrainConfig(learning_rate=args.lr, batch_size=args.batch_size, max_epochs=args.epochs,
                                          patience=args.patience, seed=args.seed)
    train = residue_training.train_residue_head if task == "secondary-structure" else \
        protein_training.train_protein_head
    # A new folder beside the old one replaces it whole: no report or history of an earlier head survives.
    with atomic_files.atomic_directory(out, overwrite=args.overwrite) as tmp:
        _, history = train(feats, records, config, head, tmp)
        info = json.loads((tmp / "head.json").read_text())
        info.update(task=task, head_name=head_name, features=args.features, provenance=provenance,
                    trained_on=str(pathlib.Path(args.data)))
        (tmp / "head.json").write_text(json.dumps(info, indent=2, default=str))
        (tmp / "history.json").write_text(json.dumps(history, indent=2))
    best = max(history, key=lambda h: h.get("val_q3", h.get("val_q10", 0)))
    print(f"best epoch {best['epoch']}: {json.dumps({k: round(v, 4) for k, v in best.items() if k != 'epoch'})}; "
          f"head saved in {out}")
    return 0


def load_trained(head_dir: str):
    """``(head module, variables, info)`` from a ``heads train`` folder."""
    from prottrans_jax.downstream import residue_training

    info_path = pathlib.Path(head_dir) / "head.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: not a trained head folder (prottrans-jax heads train --out ...)")
    info = json.loads(info_path.read_text())
    head = build_head(info["task"], info["head_name"], info.get("head", {}))
    return head, residue_training.load_head(head_dir, head, info["input_dim"]), info


def cmd_evaluate(args) -> int:
    import numpy as np

    from prottrans_jax import atomic_files
    from prottrans_jax.downstream import datasets, protein_training, provenance, report, residue_training

    out = pathlib.Path(args.report or pathlib.Path(args.head) / f"report_{pathlib.Path(args.data).name.split('.')[0]}")
    atomic_files.refuse_existing(out, args.overwrite, "report folder")
    head, variables, info = load_trained(args.head)
    task = info["task"]
    features_spec = args.features or info["features"]
    records = _read(task, args.data)
    feats, _ = checked_features(features_spec, [r.id for r in records], [r.sequence for r in records],
                                takes_residues(task, info["head_name"]), args.head, provenance.of_head(info))
    history_path = pathlib.Path(args.head) / "history.json"
    history = json.loads(history_path.read_text()) if history_path.is_file() else None
    if task == "secondary-structure":
        scores = residue_training.evaluate_residue_head(variables, head, feats, records)
        table = {"Q3": scores["dssp3"], "Q8": scores["dssp8"]}
        projection = None
    else:
        scores = protein_training.evaluate_protein_head(variables, head, feats, records)
        table = {"Q10": scores["location"], "Q2": scores["membrane"]}
        pooled = np.stack([f.mean(axis=0) if f.ndim == 2 else f for f in feats])
        projection = (pooled, [r.location for r in records], list(datasets.LOCATIONS))
    with atomic_files.atomic_directory(out, overwrite=args.overwrite) as tmp:
        path = report.write_report(tmp, f"{task} head on {args.data} ({features_spec})", table, history,
                                   projection)
        (tmp / "scores.json").write_text(json.dumps(table, indent=2))
    for name, s in table.items():
        if s is not None:
            print(f"{name} {100 * s['accuracy']:.2f}% +- {100 * s['se']:.2f} (MCC {s['mcc']:.3f})")
    print(f"report: {out / path.name}")
    return 0


def cmd_fasta(args) -> int:
    """Writes a data set's sequences as FASTA with the ids the heads use (to embed them first)."""
    from prottrans_jax import atomic_files

    atomic_files.refuse_existing(args.out, args.overwrite, "FASTA file")
    records = _read(args.task, args.data)
    with atomic_files.atomic_file(args.out) as tmp, open(tmp, "w") as f:
        for r in records:
            f.write(f">{r.id}\n{r.sequence}\n")
    print(f"wrote {len(records)} sequences to {args.out}")
    return 0


def add_parser(sub) -> None:
    """Registers ``heads`` and its subcommands on the main parser's subparsers."""
    heads = sub.add_parser("heads", help="train and evaluate downstream heads (secondary structure, localization)")
    hs = heads.add_subparsers(dest="heads_command", required=True)
    p = hs.add_parser("train", help="train a head with a validation split and early stopping")
    p.add_argument("--task", required=True, choices=TASKS,
                   help="secondary-structure (DSSP3/DSSP8/disorder per residue) or localization (10 classes + membrane)")
    p.add_argument("--data", required=True, help="NetSurfP CSV (secondary structure) or DeepLoc FASTA (localization)")
    p.add_argument("--features", default="onehot", help="onehot | blosum62 | h5:FILE (embed output) | model:DIR")
    p.add_argument("--head", default=None, choices=("cnn", "fnn", "la"), help="cnn (SS); fnn (default) or la (loc)")
    p.add_argument("--hidden", type=int, default=None, help="hidden channels/units (32)")
    p.add_argument("--depth", type=int, default=None, help="extra CNN layers (0: ProtTrans' CNN)")
    p.add_argument("--epochs", type=int, default=40, help="most epochs (early stopping usually ends sooner)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    p.add_argument("--patience", type=int, default=5, help="epochs without a better validation score before stopping")
    p.add_argument("--seed", type=int, default=0, help="initialisation, validation split and shuffling")
    p.add_argument("--out", required=True, help="folder for the head, its settings and history")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder whole (its reports too)")
    compile_cache.add_arguments(p)
    p.set_defaults(func=cmd_train)
    p = hs.add_parser("evaluate", help="the paper's metrics with bootstrap SEs, as a Markdown report with plots")
    p.add_argument("--head", required=True, help="a heads train --out folder")
    p.add_argument("--data", required=True, help="NetSurfP CSV or DeepLoc FASTA with labels to score against")
    p.add_argument("--features", default=None, help="default: what the head was trained on")
    p.add_argument("--report", default=None, help="report folder (default: HEAD/report_<data>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    compile_cache.add_arguments(p)
    p.set_defaults(func=cmd_evaluate)
    p = hs.add_parser("fasta", help="write a data set's sequences as FASTA (ids as the heads expect) to embed them")
    p.add_argument("--task", required=True, choices=TASKS, help="which reader to use for --data")
    p.add_argument("--data", required=True, help="NetSurfP CSV or DeepLoc FASTA")
    p.add_argument("--out", required=True, help="FASTA file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_fasta)
