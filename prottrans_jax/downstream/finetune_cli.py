"""``prottrans-jax finetune``: an encoder and a head trained end to end (LoRA or full), resumable, with a report."""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import sys
import types
from typing import Optional

from prottrans_jax.downstream.heads_cli import TASKS

RUN_FILE = "finetune.json"  # the settings of the run in OUT; a re-run must match them to resume
KEEP_CHECKPOINTS = 2
# Options that define a run: a re-run that changes one of them is refused (the others may change on resume).
SETTINGS = ("model", "step", "config", "family", "task", "data", "mode", "lora_rank", "lora_alpha", "head", "lr",
            "batch_size", "max_length", "seed", "val_fraction", "dtype")
METRIC = {"secondary-structure": "val_q3", "localization": "val_q10"}
EPILOG = """\
output folder (--out OUT):
  OUT/hf/             the fine-tuned encoder, LoRA merged, as a HuggingFace folder (T5EncoderModel, BertModel...):
                      transformers' from_pretrained(OUT/hf), prottrans-jax embed --model OUT/hf,
                      prottrans-jax export-hf --checkpoint OUT/hf --encoder-only --dtype float16 --out ...
  OUT/head/           the head in heads train's format (head.json, head.msgpack), trained on OUT/hf's embeddings:
                      prottrans-jax predict --fasta F --head OUT/head --model OUT/hf --out P
  OUT/checkpoints/    Orbax checkpoint_<epoch>/ (the two newest): trained weights, LoRA, head, optimizer state and
                      early-stopping counters. Re-running the same command resumes from the newest one (--epochs,
                      --patience, --mesh and --no-progress may change); other settings are refused.
  OUT/finetune.json   the run's settings
  OUT/history.json    per epoch: training loss, validation loss and Q3/Q8 (or Q10/Q2)
  OUT/report.md       the best epoch's validation scores with bootstrap SEs, confusion matrices, learning curves
  OUT/scores.json     the same scores as JSON
hf/ and head/ always hold the best epoch so far (early stopping on validation Q3 or Q10).

example:
  prottrans-jax finetune --model prot_t5_xl_u50_hf --task secondary-structure \\
      --data Train_HHblits.csv.gz --mode lora --epochs 5 --out ss_lora
  prottrans-jax predict --fasta query.fasta --head ss_lora/head --model ss_lora/hf --out query
"""


def _settings(args) -> dict:
    """The run-defining options, paths made absolute (a re-run from elsewhere names the same files)."""
    out = {k: getattr(args, k) for k in SETTINGS}
    out["model"], out["data"] = str(pathlib.Path(args.model).absolute()), str(pathlib.Path(args.data).absolute())
    out["head"] = args.head or ("cnn" if args.task == "secondary-structure" else "fnn")
    return out


def _check_args(args, settings: dict) -> None:
    """Refuses impossible settings before anything is read."""
    heads = ("cnn",) if args.task == "secondary-structure" else ("fnn", "la")
    if settings["head"] not in heads:
        raise ValueError(f"--head {settings['head']}: the {args.task} task takes {' or '.join(heads)}")
    for name in ("epochs", "batch_size", "lora_rank", "max_length", "patience"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction {args.val_fraction}: must be between 0 and 1")
    if not pathlib.Path(args.data).is_file():
        raise FileNotFoundError(f"--data {args.data}: no such file")


def _resume_or_fresh(out: pathlib.Path, settings: dict, overwrite: bool) -> bool:
    """Whether ``out`` holds this very run (to resume); refuses other contents unless ``overwrite``."""
    if overwrite or not out.exists():
        return False
    if not out.is_dir():
        raise FileExistsError(f"{out}: exists and is a file; choose another --out")
    run_file = out / RUN_FILE
    if not run_file.is_file():
        if any(out.iterdir()):
            raise FileExistsError(f"{out}: folder exists, is not empty and holds no fine-tuning run ({RUN_FILE}); "
                                  "choose another --out or pass --overwrite")
        return False
    saved = json.loads(run_file.read_text())
    diffs = [f"--{k.replace('_', '-')} {saved.get(k)} there vs {settings[k]} now"
             for k in SETTINGS if saved.get(k) != settings[k]]
    if diffs:
        raise ValueError(f"{out}: holds a fine-tuning run with other settings ({'; '.join(diffs)}); re-run it with "
                         "its settings to resume, choose another --out, or pass --overwrite to start over")
    return True


def _mesh(spec: Optional[str]):
    """``--mesh data=2,model=4`` -> (mesh shape, rules name, devices); default: all devices data-parallel."""
    import jax

    from prottrans_jax import partitioning

    if not spec:
        return {"data": -1}, "data", None
    shape = {}
    for part in spec.split(","):
        name, sep, size = part.partition("=")
        if not sep or name.strip() not in partitioning.MESH_AXES or not size.strip().isdigit() or int(size) < 1:
            raise ValueError(f"--mesh {spec!r}: expected AXIS=SIZE[,AXIS=SIZE...] with axes "
                             f"{', '.join(partitioning.MESH_AXES)}, e.g. data=2,model=4")
        shape[name.strip()] = int(size)
    count, available = math.prod(shape.values()), jax.devices()
    if count > len(available):
        raise ValueError(f"--mesh {spec}: needs {count} devices, {len(available)} available")
    rules = "fsdp" if shape.get("fsdp", 1) > 1 else "model" if shape.get("model", 1) > 1 else "data"
    return shape, rules, available[:count]


def build(settings: dict, mesh: Optional[str] = None, log=print) -> types.SimpleNamespace:
    """The data, the model and a fresh :class:`~prottrans_jax.downstream.finetune.Finetuner` for ``settings``.

    Returns:
      A namespace: ``tuner``, ``model`` (the base), ``train`` and ``val`` (cropped records), ``labels``
      (``make_labels`` per split), ``crop`` (residues kept per chain).
    """
    from prottrans_jax import model_io
    from prottrans_jax.downstream import finetune, heads_cli, residue_training

    task = settings["task"]
    try:
        records = heads_cli._read(task, settings["data"])
    except ValueError as e:
        kind = "a NetSurfP CSV" if task == "secondary-structure" else "a DeepLoc FASTA"
        raise ValueError(f"{e} (--task {task} reads {kind})") from None
    if len(records) < 2:
        raise ValueError(f"{settings['data']}: {len(records)} record(s); fine-tuning needs at least 2 (train and "
                         "validation)")
    model = model_io.load_model(settings["model"], step=settings["step"], config_name=settings["config"],
                                family=settings["family"])
    residue = task == "secondary-structure"
    head = heads_cli.build_head(task, settings["head"], {})
    config = finetune.FinetuneConfig(mode=settings["mode"], rank=settings["lora_rank"], alpha=settings["lora_alpha"],
                                     learning_rate=settings["lr"], batch_size=settings["batch_size"],
                                     seed=settings["seed"], dtype=settings["dtype"])
    shape, rules, devices = _mesh(mesh)
    tuner = finetune.Finetuner(model, head, finetune.residue_loss if residue else finetune.protein_loss, config,
                               mesh_shape=shape, rules=rules, devices=devices)
    crop = settings["max_length"]
    if tuner.max_positions is not None and crop > tuner.max_positions - tuner.scheme.extra:
        crop = tuner.max_positions - tuner.scheme.extra
        log(f"note: chains are cropped to {crop} residues ({model.architecture} has {tuner.max_positions} positions)")
    records = [finetune.crop(r, crop) for r in records]
    train_idx, val_idx = residue_training.split_validation(len(records), settings["val_fraction"], settings["seed"])
    train, val = [records[i] for i in train_idx], [records[i] for i in val_idx]
    make = finetune.residue_labels if residue else finetune.protein_labels
    return types.SimpleNamespace(tuner=tuner, model=model, train=train, val=val, crop=crop,
                                 labels={"train": make(train), "val": make(val)})


def _abstract(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def restore(out_dir, epoch: Optional[int] = None, mesh: Optional[str] = None):
    """``(Finetuner, checkpoint meta)`` of a run folder at ``epoch`` (default: the newest checkpoint kept)."""
    from prottrans_jax import checkpoints

    out = pathlib.Path(out_dir)
    if not (out / RUN_FILE).is_file():
        raise FileNotFoundError(f"{out}: not a fine-tuning run folder (no {RUN_FILE})")
    settings = json.loads((out / RUN_FILE).read_text())
    run = build(settings, mesh, log=lambda *_: None)
    with checkpoints.TrainCheckpointer(str((out / "checkpoints").absolute()), keep=KEEP_CHECKPOINTS,
                                       async_save=False) as ckpt:
        tree, meta = ckpt.restore(epoch, abstract_state=_abstract(run.tuner.checkpoint_state()),
                                  expected_config=settings)
    run.tuner.load_checkpoint_state(tree)
    return run.tuner, meta


def _scores(task: str, probs: list, records: list, n_boot: int = 1000) -> dict:
    """Validation summaries (accuracy, MCC, per class, confusion, bootstrap SE) by the report's metric names."""
    import numpy as np

    from prottrans_jax.downstream import datasets, metrics

    if task == "secondary-structure":
        return {name: metrics.residue_scores([(getattr(r, key), p[key].argmax(-1), r.evaluate)
                                              for r, p in zip(records, probs)], list(labels), n_boot=n_boot)
                for name, key, labels in (("Q3", "dssp3", datasets.DSSP3), ("Q8", "dssp8", datasets.DSSP8))}
    location = np.array([p["location"].argmax() for p in probs])
    membrane = np.array([p["membrane"].argmax() for p in probs])
    known = np.array([r.membrane >= 0 for r in records])
    return {"Q10": metrics.protein_scores(np.array([r.location for r in records]), location,
                                          list(datasets.LOCATIONS), n_boot=n_boot),
            "Q2": metrics.protein_scores(np.array([r.membrane for r in records])[known], membrane[known],
                                         ["soluble", "membrane"], n_boot=n_boot) if known.any() else None}


def _write_outputs(out: pathlib.Path, run, settings: dict, epoch: int, metric: float) -> None:
    """The best epoch so far: the merged encoder as ``OUT/hf`` and the head as ``OUT/head`` (each replaced whole)."""
    import dataclasses

    from prottrans_jax import atomic_files
    from prottrans_jax.downstream import finetune, provenance, residue_training
    from prottrans_jax.hf import export
    from prottrans_jax.models.heads import takes_residues

    tuner, hf = run.tuner, (out / "hf").absolute()
    encoder = finetune.merged_encoder(tuner, str(hf), epoch)
    where = str((out / "checkpoints" / f"checkpoint_{epoch}").absolute())
    export.export_model(dataclasses.replace(encoder, source=where), hf, encoder_only=True, overwrite=True)
    task = settings["task"]
    info = {"kind": "secondary_structure" if task == "secondary-structure" else "localization",
            "head_class": type(tuner.head).__name__, "task": task, "head_name": settings["head"],
            "features": f"model:{hf}", "head": residue_training.head_settings(tuner.head), "input_dim": tuner.width,
            "provenance": provenance.features_provenance(f"model:{hf}", encoder,
                                                         per_residue=takes_residues(tuner.head)),
            "epoch": epoch, METRIC[task]: metric, "trained_on": settings["data"],
            "finetuned": {"base_model": settings["model"], "mode": settings["mode"], "checkpoint": where}}
    variables = tuner.state["head"] if not tuner.batch_stats else {"params": tuner.state["head"],
                                                                    "batch_stats": tuner.batch_stats}
    with atomic_files.atomic_directory(out / "head", overwrite=True) as tmp:
        residue_training.save_head(tmp, variables, info)


def _epoch(run, epoch: int, epochs: int, seed: int, progress: bool) -> tuple[float, list, float]:
    """Trains one epoch (seeded by epoch, so a resumed run repeats an uninterrupted one) and validates."""
    import jax
    import numpy as np
    from tqdm.auto import tqdm

    tuner = run.tuner
    steps = math.ceil(len(run.train) / tuner.rows)
    with tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress, leave=False) as bar:
        def on_step(loss):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        losses = tuner.train_epoch([r.sequence for r in run.train], run.labels["train"],
                                   np.random.default_rng([seed, epoch]),
                                   jax.random.fold_in(jax.random.key(seed), epoch), on_step)
    probs, val_loss = tuner.predict([r.sequence for r in run.val], run.labels["val"])
    return float(np.mean(losses)), probs, val_loss


def _history_entry(epoch: int, train_loss: float, val_loss: float, scores: dict) -> dict:
    entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
    for name, s in scores.items():
        entry[f"val_{name.lower()}"] = s["accuracy"] if s is not None else float("nan")
    return entry


def _epoch_line(task: str, h: dict) -> str:
    """As ``heads train`` prints an epoch: one loss, computed the same way for both splits, and the accuracies."""
    from prottrans_jax.downstream import protein_training, residue_training

    loss = (residue_training if task == "secondary-structure" else protein_training).LOSS_NAME
    scores = " ".join(f"{k.replace('val_q', 'val_Q')}={v:.4f}" for k, v in h.items() if k.startswith("val_q"))
    return f"[epoch {h['epoch']}] {loss} train={h['train_loss']:.4f} val={h['val_loss']:.4f} {scores}"


def cmd_finetune(args) -> int:
    try:
        return _finetune(args)
    except KeyboardInterrupt:
        from prottrans_jax.hf import checkpoint_reader

        saved = sorted(checkpoint_reader.finished_step_dirs(str(pathlib.Path(args.out).absolute() / "checkpoints")))
        done = f"epochs up to {saved[-1]} are saved in {pathlib.Path(args.out) / 'checkpoints'}; run the same " \
            "command to resume" if saved else "no epoch was finished, nothing is saved"
        print(f"\ninterrupted: {done}", file=sys.stderr)
        return 130


def _finetune(args) -> int:
    from prottrans_jax import checkpoints

    settings = _settings(args)
    _check_args(args, settings)
    out = pathlib.Path(args.out).absolute()
    resume = _resume_or_fresh(out, settings, args.overwrite)
    run = build(settings, args.mesh)
    if args.overwrite and out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    print(f"fine-tuning {run.model.describe()} ({settings['mode']}, {run.tuner.trainable_count():,} trainable "
          f"parameters) for {settings['task']}: {len(run.train)} training / {len(run.val)} validation chains cropped "
          f"to {run.crop} residues, mesh {dict(run.tuner.mesh.shape)}")
    with checkpoints.TrainCheckpointer(str(out / "checkpoints"), keep=KEEP_CHECKPOINTS, async_save=False) as ckpt:
        progress = _resume(ckpt, run, settings, args.patience) if resume else _Progress(args.patience)
        _train(ckpt, run, settings, progress, out, args)
    _finish(out, settings, progress)
    return 0


class _Progress:
    """Where a run stands: per-epoch history, the best epoch and its scores, early stopping."""

    def __init__(self, patience: int):
        from prottrans_jax.downstream.residue_training import EarlyStopping

        self.epoch, self.history, self.best = 0, [], {"epoch": None, "scores": None}
        self.stopper = EarlyStopping(patience)

    def meta(self, settings: dict) -> dict:
        return {"config": settings, "history": self.history, "best": self.best,
                "stopper": {"best": self.stopper.best, "bad": self.stopper.bad}}


def _resume(ckpt, run, settings: dict, patience: int) -> _Progress:
    """Restores the newest checkpoint into ``run.tuner`` (if any) and says so."""
    progress = _Progress(patience)
    step = ckpt.latest_step()
    if step is None:
        return progress
    tree, meta = ckpt.restore(step, abstract_state=_abstract(run.tuner.checkpoint_state()), expected_config=settings)
    run.tuner.load_checkpoint_state(tree)
    progress.epoch, progress.history, progress.best = step, meta["history"], meta["best"]
    progress.stopper.best, progress.stopper.bad = meta["stopper"]["best"], meta["stopper"]["bad"]
    print(f"resuming from {ckpt.step_dir(step)}: {step} epoch(s) done, best {METRIC[settings['task']]} "
          f"{progress.stopper.best:.4f} at epoch {progress.best['epoch']}")
    return progress


def _train(ckpt, run, settings: dict, progress: _Progress, out: pathlib.Path, args) -> None:
    """Epochs ``progress.epoch + 1 .. --epochs`` (or until early stopping), a checkpoint after each."""
    task, metric, stopper = settings["task"], METRIC[settings["task"]], progress.stopper
    if stopper.stop:
        print(f"the run stopped early at epoch {progress.epoch} (no better {metric} for {stopper.bad} epochs)")
        return
    if progress.epoch >= args.epochs:
        print(f"{progress.epoch} epoch(s) already done (--epochs {args.epochs})")
    for epoch in range(progress.epoch + 1, args.epochs + 1):
        train_loss, probs, val_loss = _epoch(run, epoch, args.epochs, settings["seed"], not args.no_progress)
        scores = _scores(task, probs, run.val)
        progress.history.append(_history_entry(epoch, train_loss, val_loss, scores))
        improved = stopper.update(progress.history[-1][metric])
        print(_epoch_line(task, progress.history[-1]) + (" (best)" if improved else ""), flush=True)
        if improved:
            progress.best = {"epoch": epoch, "scores": scores}
            _write_outputs(out, run, settings, epoch, stopper.best)  # before the checkpoint that says so
        (out / "history.json").write_text(json.dumps(progress.history, indent=2) + "\n")
        ckpt.save(epoch, run.tuner.checkpoint_state(), progress.meta(settings), force=True)
        progress.epoch = epoch
        if stopper.stop:
            print(f"early stop: no better {metric} for {stopper.bad} epoch(s)")
            break


def _finish(out: pathlib.Path, settings: dict, progress: _Progress) -> None:
    """The report of the best epoch's validation scores, and where everything is."""
    from prottrans_jax.downstream import report

    table, best = progress.best["scores"], progress.best["epoch"]
    title = (f"{settings['task']}: fine-tuned ({settings['mode']}) {pathlib.Path(settings['model']).name}, "
             f"best epoch {best}, validation split")
    path = report.write_report(out, title, table, progress.history)
    (out / "scores.json").write_text(json.dumps(table, indent=2) + "\n")
    shown = "; ".join(f"{k} {100 * s['accuracy']:.2f}% +- {100 * s['se']:.2f}" for k, s in table.items() if s)
    print(f"best epoch {best}: validation {shown}\nencoder: {out / 'hf'}\nhead: {out / 'head'}\nreport: {path}\n"
          f"predict with: prottrans-jax predict --fasta FASTA --head {out / 'head'} --model {out / 'hf'} --out PREFIX")


def add_parser(sub) -> None:
    """Registers ``finetune`` on the main parser's subparsers."""
    from prottrans_jax import compile_cache
    from prottrans_jax.cli import _add_model_args

    p = sub.add_parser("finetune", help="fine-tune an encoder with a head end to end (LoRA or full), resumable",
                       description="Fine-tunes a protein language model's encoder together with a secondary-structure\n"
                                   "or localization head; early stopping on a held-out validation split.",
                       epilog=EPILOG)
    p.add_argument("--model", required=True,
                   help="the model to start from: our or t5x's training directory (Orbax), a checkpoint_N folder, "
                        "or a HuggingFace folder")
    p.add_argument("--task", required=True, choices=TASKS,
                   help="secondary-structure (per residue: DSSP3/8, disorder) or localization (per protein)")
    p.add_argument("--data", required=True,
                   help="NetSurfP CSV (secondary-structure) or DeepLoc FASTA (localization)")
    p.add_argument("--out", required=True, help="run folder (layout below); a re-run resumes it")
    p.add_argument("--mode", default="lora", choices=("lora", "full"),
                   help="lora: low-rank adapters on attention q/k/v/o plus the layer norms; full: every weight")
    p.add_argument("--lora-rank", type=int, default=4, help="rank of the LoRA adapters (4 in ProtTrans' notebooks)")
    p.add_argument("--lora-alpha", type=float, default=8.0, help="LoRA scale numerator: deltas are A@B*alpha/rank")
    p.add_argument("--head", default=None, choices=("cnn", "fnn", "la"),
                   help="cnn for secondary-structure; fnn (mean-pooled, when not given) or la (light attention) "
                        "for localization")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (ProtTrans' LoRA notebooks)")
    p.add_argument("--epochs", type=int, default=5, help="epochs in all (a resumed run continues up to this)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="chains per step (rounded to a multiple of the mesh's data-parallel devices)")
    p.add_argument("--max-length", type=int, default=512,
                   help="crop chains to their first N residues (and to a BERT-family model's positions)")
    p.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better "
                                                          "validation Q3 (Q10)")
    p.add_argument("--seed", type=int, default=0, help="validation split, LoRA init, shuffling and dropout")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of --data held out for validation")
    p.add_argument("--mesh", default=None,
                   help="device mesh, e.g. data=2,model=4 (axes data, fsdp, model); when not given: every device "
                        "data-parallel")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype of the encoder (weights stay float32; OUT/hf is written in float32)")
    p.add_argument("--overwrite", action="store_true", help="delete --out and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the per-epoch lines stay)")
    _add_model_args(p, "model")
    compile_cache.add_arguments(p)
    p.set_defaults(func=cmd_finetune)
