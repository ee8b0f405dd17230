"""``python -m prottrans_jax.train --gin_file=F [--gin.NAME=VALUE ...]``: gin-configured pretraining (t5x-style flags).

Run gins bind ``train_script.train.*`` (``from prottrans_jax import train as train_script``) and
the t5x-named macros ``MODEL_DIR``, ``MIXTURE_OR_TASK_NAME``, ``TASK_FEATURE_LENGTHS``,
``TRAIN_STEPS`` and ``BATCH_SIZE``; see gin/ for examples.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any, Mapping, Optional, Sequence

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def train(
    *,
    model_dir: str,
    model_config: Any,
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    train_steps: int,
    batch_size: int,
    mesh_shape: Optional[Mapping[str, int]] = None,
    partitioning_rules: Any = "data",
    optimizer: str = "adafactor",
    optimizer_kwargs: Optional[Mapping[str, Any]] = None,
    schedule: str = "rsqrt",
    learning_rate: float = 1e-2,
    warmup_steps: int = 10_000,
    z_loss: float = 1e-4,
    num_microbatches: int = 1,
    pack: bool = False,
    seed: int = 0,
    log_every: int = 10,
    eval_every: int = 0,
    eval_batches: int = 10,
    checkpoint_every: int = 1000,
    keep_checkpoints: int = 3,
    async_checkpoints: bool = True,
    peak_flops_per_device: Optional[float] = None,
    distributed: Optional[Mapping[str, Any]] = None,
):
    """Pretrains ``model_config`` on a SeqIO task, resuming from ``model_dir`` when it holds checkpoints.

    Args:
      model_dir: checkpoints (``checkpoint_<step>/``), TensorBoard events and the run config.
      model_config: a model config (e.g. ``@configs.get_config()`` in gin).
      mixture_or_task_name: registered SeqIO task, e.g. ``uniref50_prot_t5_denoise``.
      task_feature_lengths: e.g. ``{"inputs": 512, "targets": 512}``.
      train_steps: total optimizer steps (a resumed run continues up to this).
      batch_size: global batch size (sequences per step, over all hosts).
      mesh_shape: e.g. ``{"data": 2, "model": 4}``; -1 takes the remaining devices; default all data.
      partitioning_rules: ``"data"``, ``"model"``, ``"fsdp"`` or a list of (logical, mesh axis) rules.
      optimizer, optimizer_kwargs: ``adafactor`` | ``adamw`` | ``lamb`` and their options.
      schedule, learning_rate, warmup_steps: ``rsqrt`` | ``linear`` | ``cosine`` | ``constant``.
      z_loss: coefficient of the softmax normaliser penalty (encoder-decoder objectives).
      num_microbatches: gradient accumulation steps per batch.
      pack: pack several short proteins into one row.
      seed: parameter init, dropout and data order.
      log_every, eval_every, eval_batches: reporting (steps); eval reads the task's validation split.
      checkpoint_every, keep_checkpoints, async_checkpoints: checkpointing.
      peak_flops_per_device: for the MFU estimate; default: the vendor peak of known TPUs/GPUs, or a
        matmul peak measured at start-up on CPU. 0 turns the estimate (and its extra compile) off.
      distributed: keyword arguments for ``jax.distributed.initialize`` (multi-host runs).
    """
    _check_required(model_dir=model_dir, model_config=model_config, mixture_or_task_name=mixture_or_task_name,
                    task_feature_lengths=task_feature_lengths, train_steps=train_steps, batch_size=batch_size)
    if "://" not in model_dir:
        model_dir = os.path.abspath(model_dir)  # Orbax needs absolute local paths
    import jax

    if distributed is not None:
        # CPU hosts need a collectives backend for cross-process arrays (TPU/GPU bring their own).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**distributed)
    from prottrans_jax import (checkpoints, model_adapters, objectives, optimizers, partitioning, pipeline,
                               trainer as trainer_lib, training_loop)

    objective_name = pipeline.check_task(mixture_or_task_name)
    module, logits_fn, init_inputs = model_adapters.adapt(model_config, objective_name, task_feature_lengths)
    lr_fn = optimizers.make_schedule(schedule, learning_rate, warmup_steps, train_steps)
    objective_cls = objectives.OBJECTIVE_FOR_TASK[objective_name]
    objective = objective_cls(z_loss=z_loss) if objective_cls is objectives.EncoderDecoderObjective else objective_cls()
    trainer = trainer_lib.Trainer(
        module=module, logits_fn=logits_fn, objective=objective,
        optimizer=optimizers.make_optimizer(optimizer, lr_fn, **dict(optimizer_kwargs or {})),
        mesh=partitioning.make_mesh(mesh_shape), rules=partitioning_rules, init_inputs=init_inputs,
        num_microbatches=num_microbatches, learning_rate_fn=lr_fn,
    )
    _check_batch_divides(batch_size, trainer)
    run_config = _run_config(model_config, optimizer, optimizer_kwargs, mixture_or_task_name)
    checkpointer = checkpoints.TrainCheckpointer(model_dir, keep=keep_checkpoints, save_every=checkpoint_every,
                                                 async_save=async_checkpoints)
    state = _initial_state(trainer, checkpointer, run_config, seed, model_config)
    skip = int(state.step)
    batches = training_loop.host_batches(mixture_or_task_name, task_feature_lengths, batch_size, "train", seed, pack, skip)
    eval_fn = lambda: training_loop.host_batches(  # noqa: E731
        mixture_or_task_name, task_feature_lengths, batch_size, "validation", seed, pack, num_epochs=1)
    loop_cfg = training_loop.LoopConfig(
        model_dir=model_dir, train_steps=train_steps, log_every=log_every, eval_every=eval_every,
        eval_batches=eval_batches, peak_flops_per_device=peak_flops_per_device,
    )
    from prottrans_jax import config_io, model_io

    meta = {"config": run_config, "config_fingerprint": checkpoints.config_fingerprint(run_config),
            "model": type(model_config).__name__, "model_config": config_io.config_to_dict(model_config),
            "architecture": model_io.ARCHITECTURE_OF_CONFIG[type(model_config)]}
    try:
        state = training_loop.run(trainer, state, loop_cfg, batches, eval_fn if eval_every else None, meta,
                                  checkpointer)
        latest = checkpointer.latest_step()
        if latest is not None and jax.process_index() == 0:
            print(f"last checkpoint: {checkpointer.step_dir(latest)} (step {latest}); export it with "
                  f"prottrans-jax export-hf --checkpoint {model_dir} --out <folder>", flush=True)
        return state
    finally:
        checkpointer.close()


_MACROS = {"model_dir": "MODEL_DIR", "model_config": "MODEL_CONFIG", "mixture_or_task_name": "MIXTURE_OR_TASK_NAME",
           "task_feature_lengths": "TASK_FEATURE_LENGTHS", "train_steps": "TRAIN_STEPS", "batch_size": "BATCH_SIZE"}


def _check_required(**values):
    """Fails before any work when a required macro was left at %gin.REQUIRED."""
    import gin

    # gin deep-copies bound values, so a macro left at %gin.REQUIRED arrives as a copy of its bare object().
    missing = [_MACROS[k] for k, v in values.items() if v is gin.REQUIRED or type(v) is object]
    if missing:
        raise ValueError(
            f"required gin setting(s) not given: {', '.join(missing)}; e.g. --gin.{missing[0]}=... on the command line"
        )


def _check_batch_divides(batch_size: int, trainer) -> None:
    """Fails before any compilation when the global batch cannot be split over the devices it is sharded on."""
    axes = trainer.batch_sharding(2).spec[0] or ()
    axes = axes if isinstance(axes, tuple) else (axes,)
    ways = 1
    for name in axes:
        ways *= trainer.mesh.shape[name]
    if batch_size % ways:
        raise ValueError(f"BATCH_SIZE {batch_size} does not divide over the {ways} devices the batch is split "
                         f"across (mesh {dict(trainer.mesh.shape)}); use a multiple of {ways}")


def _run_config(model_config, optimizer, optimizer_kwargs, task) -> dict:
    """The settings that fix parameter and optimizer-state shapes (a resumed run must match them)."""
    fields = {k: str(v) for k, v in dataclasses.asdict(model_config).items()}
    return {"model_class": type(model_config).__name__, **fields, "optimizer": optimizer,
            "optimizer_kwargs": json.dumps(dict(optimizer_kwargs or {}), sort_keys=True, default=str)}


def _initial_state(trainer, checkpointer, run_config: dict, seed: int, model_config):
    from prottrans_jax import checkpoints
    from prottrans_jax.hf import checkpoint_reader

    latest = checkpointer.latest_step()
    if latest is None:
        return trainer.init_state(seed)
    if checkpoint_reader.read_meta(str(checkpointer.step_dir(latest))).get("params_only"):
        return _state_from_imported_weights(trainer, checkpointer, latest, seed, model_config)
    state, meta = checkpointer.restore(
        abstract_state=trainer.abstract_state(), expected_fingerprint=checkpoints.config_fingerprint(run_config),
        expected_config=run_config,
    )
    print(f"resumed from {checkpointer.directory} at step {int(state.step)}", flush=True)
    return state


def _state_from_imported_weights(trainer, checkpointer, step: int, seed: int, model_config):
    """A fresh optimizer state around weights that ``import-hf`` wrote (a params-only checkpoint)."""
    from prottrans_jax import model_io

    where = checkpointer.step_dir(step)
    model = model_io.load_orbax(str(where), config_name=None)
    _check_imported_fits(model, model_config, str(where))
    params = model.params
    if getattr(model_config, "scan_layers", False) or getattr(getattr(model_config, "discriminator", None),
                                                              "scan_layers", False):
        from prottrans_jax.models import layers

        params = layers.stack_layer_params(params)
    state = trainer.replace_params(trainer.init_state(seed), params)
    print(f"starting from the weights imported into {where} ({model.architecture}); fresh optimizer state",
          flush=True)
    return state


def _check_imported_fits(model, model_config, where: str) -> None:
    from prottrans_jax import checkpoints, config_io, model_io

    wanted_arch = model_io.ARCHITECTURE_OF_CONFIG[type(model_config)]
    if model.architecture != wanted_arch:
        raise checkpoints.IncompatibleCheckpointError(
            f"{where} holds imported {model.architecture} weights, but this run trains a {wanted_arch}; "
            "import a checkpoint with the training head (e.g. T5ForConditionalGeneration, BertForMaskedLM)")
    diff = config_io.weights_mismatch(model.config, model_config)
    if diff:
        raise checkpoints.IncompatibleCheckpointError(
            f"{where} holds imported weights of another model than MODEL_CONFIG: "
            f"{diff}. Set the run's model config to match "
            "(prottrans-jax import-hf prints a matching one), or use a fresh MODEL_DIR")


# ---------------------------------------------------------------------------------------
# Command line (t5x's flag style).
# ---------------------------------------------------------------------------------------


USAGE = """\
usage: python -m prottrans_jax.train --gin_file=FILE [--gin_file=FILE ...] [--gin.NAME=VALUE ...]
       prottrans-jax train           (the same flags)

Pretrains a model configured by gin files (t5x's flag style). A run resumes from the newest finished
checkpoint in MODEL_DIR, saves on SIGTERM/SIGINT and ends by printing where its last checkpoint is.

flags:
  --gin_file=FILE          a gin file; repeatable. Looked up as given, then in the package's gin/ folder
                           (e.g. runs/prot_t5_tiny.gin), the working directory and --gin_search_paths.
  --gin.NAME=VALUE         one binding, e.g. --gin.MODEL_DIR="'runs/tiny'" or --gin.TRAIN_STEPS=100
                           (strings need inner quotes, as in t5x).
  --gin_bindings=BINDING   a binding in gin syntax ("NAME = VALUE"); repeatable.
  --gin_search_paths=DIRS  comma-separated extra folders to look for gin files in.
  -h, --help               this message.

macros a run gin sets (override with --gin.NAME=...):
  MODEL_DIR (required), MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS, TRAIN_STEPS, BATCH_SIZE,
  MESH_SHAPE, PARTITIONING_RULES (data|model|fsdp), OPTIMIZER (adafactor|adamw|lamb),
  SCHEDULE (rsqrt|linear|cosine|constant), LEARNING_RATE, WARMUP_STEPS, NUM_MICROBATCHES, EVAL_EVERY.

run gins shipped in gin/runs/: prot_t5_tiny, prot_t5_xl, prot_t5_xxl, prot_bert(_tiny), prot_albert(_tiny),
prot_electra(_tiny), prot_txl(_bfd, _tiny), prot_xlnet(_tiny).

example:
  python -m prottrans_jax.train --gin_file=runs/prot_t5_tiny.gin --gin.MODEL_DIR="'runs/tiny'" \\
      --gin.TRAIN_STEPS=100
"""


def parse_flags(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Splits ``--gin_file``, ``--gin_search_paths``, ``--gin_bindings`` and ``--gin.NAME=VALUE`` flags.

    Returns:
      (gin files, bindings, search paths).

    Raises:
      ValueError: for any other flag, naming it.
    """
    files, bindings, paths = [], [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if not eq and name in ("--gin_file", "--gin_bindings", "--gin_search_paths") and args:
            value = args.pop(0)
        if name == "--gin_file":
            files.append(value)
        elif name == "--gin_bindings":
            bindings.append(value)
        elif name == "--gin_search_paths":
            paths.extend(p for p in value.split(",") if p)
        elif name.startswith("--gin."):
            bindings.append(f"{name[len('--gin.'):]}={value}")
        else:
            raise ValueError(f"unknown flag {arg!r}; use --gin_file=F, --gin.NAME=VALUE, --gin_bindings, --gin_search_paths")
    if not files:
        raise ValueError("no --gin_file given; e.g. --gin_file=gin/runs/prot_t5_tiny.gin")
    return files, bindings, paths


def configure(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()) -> None:
    """Parses gin files and bindings (our gin/ folder is always searched), with one clear error."""
    import gin

    for path in [GIN_DIR, os.getcwd(), *search_paths]:
        gin.add_config_file_search_path(path)
    _drop_package_resource_reader()
    quiet = _DropGinPathNoise()
    logging.getLogger().addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=False)
    except (ValueError, IOError, KeyError, NameError, ImportError) as e:
        raise ValueError(f"gin configuration error: {e}") from None
    finally:
        logging.getLogger().removeFilter(quiet)


def _drop_package_resource_reader():
    """Stops gin reading 'runs/x.gin' as file x.gin of a Python package 'runs'.

    gin's resource reader imports the path's folder as a package; a plain folder of that name in
    the working directory (say ./runs or ./models) is a namespace package without a file, and gin
    then crashes instead of trying the next search path. Our gin files are plain files.
    """
    import gin.config

    gin.config._FILE_READERS[:] = [r for r in gin.config._FILE_READERS if r[0].__module__ != "gin.resource_reader"]


class _DropGinPathNoise(logging.Filter):
    """gin logs an ERROR for every search path that lacks an included file before finding it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Path not found")


def run_configured():
    """Calls :func:`train` with everything gin bound, checking required bindings first."""
    import gin

    configured = gin.get_configurable(train)
    try:
        return configured()
    except TypeError as e:
        # gin reports a missing required binding or an unknown argument as a TypeError at call time.
        raise ValueError(f"gin configuration error in train(): {e}") from None


# oneDNN matmuls: 412 vs 345 tokens/s for a ProtT5-small train step on a 2-core CPU (BENCHMARKS.md).
CPU_XLA_FLAGS = "--xla_cpu_use_onednn=true"


def default_cpu_xla_flags() -> str:
    """``XLA_FLAGS`` with our CPU default added (flags the user set win; no effect on TPU/GPU)."""
    flags = os.environ.get("XLA_FLAGS", "")
    return flags if "xla_cpu_use_onednn" in flags else f"{flags} {CPU_XLA_FLAGS}".strip()


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "jax" not in sys.modules:  # XLA reads its flags once, when the backend starts
        os.environ["XLA_FLAGS"] = default_cpu_xla_flags()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help", "-help", "--helpfull") for a in argv):
        print(USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    from prottrans_jax import native_logs

    try:
        files, bindings, paths = parse_flags(argv)
        configure(files, bindings, paths)
        with native_logs.quiet_native_startup():
            run_configured()
    except ValueError as e:
        print(f"prottrans_jax.train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Run the module's registered copy (gin binds prottrans_jax.train.train, not __main__.train).
    from prottrans_jax import train as _train_module

    sys.exit(_train_module.main())
