"""``prottrans-jax heads train|evaluate|fasta``: downstream heads from the command line."""

from __future__ import annotations

import json
import pathlib

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


def _features(args, task, head_name, records):
    from prottrans_jax.downstream import inputs

    per_residue = task == "secondary-structure" or head_name == "la"
    return inputs.features_for(args.features, [r.id for r in records], [r.sequence for r in records], per_residue)


def cmd_train(args) -> int:
    from prottrans_jax.downstream import protein_training, residue_training

    task = args.task
    head_name = args.head or ("cnn" if task == "secondary-structure" else "fnn")
    settings = {k: v for k, v in (("hidden", args.hidden), ("depth", args.depth)) if v is not None}
    head = build_head(task, head_name, settings)
    records = _read(task, args.data)
    feats = _features(args, task, head_name, records)
    config = residue_training.TrainConfig(learning_rate=args.lr, batch_size=args.batch_size, max_epochs=args.epochs,
                                          patience=args.patience, seed=args.seed)
    train = residue_training.train_residue_head if task == "secondary-structure" else \
        protein_training.train_protein_head
    _, history = train(feats, records, config, head, args.out)
    out = pathlib.Path(args.out)
    info = json.loads((out / "head.json").read_text())
    info.update(task=task, head_name=head_name, features=args.features, trained_on=str(pathlib.Path(args.data)))
    (out / "head.json").write_text(json.dumps(info, indent=2, default=str))
    (out / "history.json").write_text(json.dumps(history, indent=2))
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

    from prottrans_jax.downstream import datasets, protein_training, report, residue_training

    head, variables, info = load_trained(args.head)
    task = info["task"]
    features_spec = args.features or info["features"]
    args.features = features_spec
    records = _read(task, args.data)
    feats = _features(args, task, info["head_name"], records)
    history_path = pathlib.Path(args.head) / "history.json"
    history = json.loads(history_path.read_text()) if history_path.is_file() else None
    out = pathlib.Path(args.report or pathlib.Path(args.head) / f"report_{pathlib.Path(args.data).name.split('.')[0]}")
    if task == "secondary-structure":
        scores = residue_training.evaluate_residue_head(variables, head, feats, records)
        table = {"Q3": scores["dssp3"], "Q8": scores["dssp8"]}
        projection = None
    else:
        scores = protein_training.evaluate_protein_head(variables, head, feats, records)
        table = {"Q10": scores["location"], "Q2": scores["membrane"]}
        pooled = np.stack([f.mean(axis=0) if f.ndim == 2 else f for f in feats])
        projection = (pooled, [r.location for r in records], list(datasets.LOCATIONS))
    path = report.write_report(out, f"{task} head on {args.data} ({features_spec})", table, history, projection)
    (out / "scores.json").write_text(json.dumps(table, indent=2))
    for name, s in table.items():
        if s is not None:
            print(f"{name} {100 * s['accuracy']:.2f}% +- {100 * s['se']:.2f} (MCC {s['mcc']:.3f})")
    print(f"report: {path}")
    return 0


def cmd_fasta(args) -> int:
    """Writes a data set's sequences as FASTA with the ids the heads use (to embed them first)."""
    records = _read(args.task, args.data)
    with open(args.out, "w") as f:
        for r in records:
            f.write(f">{r.id}\n{r.sequence}\n")
    print(f"wrote {len(records)} sequences to {args.out}")
    return 0


def add_parser(sub) -> None:
    """Registers ``heads`` and its subcommands on the main parser's subparsers."""
    heads = sub.add_parser("heads", help="train and evaluate downstream heads (secondary structure, localization)")
    hs = heads.add_subparsers(dest="heads_command", required=True)
    p = hs.add_parser("train", help="train a head with a validation split and early stopping")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", required=True, help="NetSurfP CSV (secondary structure) or DeepLoc FASTA (localization)")
    p.add_argument("--features", default="onehot", help="onehot | blosum62 | h5:FILE (embed output) | model:DIR")
    p.add_argument("--head", default=None, choices=("cnn", "fnn", "la"), help="cnn (SS); fnn (default) or la (loc)")
    p.add_argument("--hidden", type=int, default=None, help="hidden channels/units (32)")
    p.add_argument("--depth", type=int, default=None, help="extra CNN layers (0: ProtTrans' CNN)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for the head, its settings and history")
    p.set_defaults(func=cmd_train)
    p = hs.add_parser("evaluate", help="the paper's metrics with bootstrap SEs, as a Markdown report with plots")
    p.add_argument("--head", required=True, help="a heads train --out folder")
    p.add_argument("--data", required=True)
    p.add_argument("--features", default=None, help="default: what the head was trained on")
    p.add_argument("--report", default=None, help="report folder (default: HEAD/report_<data>)")
    p.set_defaults(func=cmd_evaluate)
    p = hs.add_parser("fasta", help="write a data set's sequences as FASTA (ids as the heads expect) to embed them")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_fasta)
