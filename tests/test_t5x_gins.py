"""The t5x entry gins (gin/*.gin): includes resolve from the repository root, and each gin, parsed by gin
as ``python -m t5x.{train,eval,infer}`` parses it, builds our model and task.

t5x is not on PyPI, so a stub stands in for it: modules with t5x's configurable names and signatures,
and its three run gins reduced to the macros and bindings that t5x requires. The stub's ``__main__``
holds only the running script's entry function, as under t5x, so an eval gin that binds
``train_script.train`` fails here as it fails there. The real check is scripts/check_t5x_gins.sh.
"""

import importlib.util
import pathlib
import sys
import textwrap
import types

import gin
import pytest
import seqio
from gin import config_parser

from prottrans_jax.models import configs, t5
from prottrans_jax.vocab import ProtT5Vocabulary
from prottrans_jax_tasks import metrics

REPO = pathlib.Path(__file__).resolve().parents[1]
T5X_RUN_GINS = {"train": "pretrain", "evaluate": "eval", "infer": "infer"}
# entry gin -> the entry function of the t5x script that runs it
ENTRY_GINS = {
    "prot_t5_xl.gin": "train",
    "prot_t5_xl_eval.gin": "evaluate",
    "prot_t5_xl_infer.gin": "infer",
    "prot_t5_tiny_t5x.gin": "train",
    "prot_t5_tiny_t5x_eval.gin": "evaluate",
    "prot_t5_tiny_t5x_infer.gin": "infer",
}
TWINS = {"prot_t5_tiny_t5x.gin": "prot_t5_xl.gin", "prot_t5_tiny_t5x_eval.gin": "prot_t5_xl_eval.gin",
         "prot_t5_tiny_t5x_infer.gin": "prot_t5_xl_infer.gin"}
# What a tiny twin may change: sizes, steps, the demo corpus, one device.
TWIN_MAY_SET = {
    "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "BATCH_SIZE", "DROPOUT_RATE", "MODEL_CONFIG_NAME",
    "configs.get_config.dtype", "partitioning.PjitPartitioner.num_partitions", "utils.SaveCheckpointConfig.period",
    "utils.DatasetConfig.batch_size", "train_script.train.eval_period", "train_script.train.eval_steps",
}
# The flags each README command passes.
COMMAND_BINDINGS = {
    "train": ["MODEL_DIR = '/tmp/run'"],
    "evaluate": ["CHECKPOINT_PATH = '/tmp/run/checkpoint_100'", "EVAL_OUTPUT_DIR = '/tmp/run/eval'"],
    "infer": ["CHECKPOINT_PATH = '/tmp/run/checkpoint_100'", "INFER_OUTPUT_DIR = '/tmp/run/infer'"],
}

_RECORD = "class {name}:\n    def __init__(self, {args}):\n        self.__dict__.update(locals())\n"
_STUB_MODULES = {
    "adafactor": [("Adafactor", "decay_rate=None, step_offset=0, logical_factor_rules=None")],
    "models": [("EncoderDecoderModel", "module, input_vocabulary, output_vocabulary, optimizer_def, "
                "decode_fn=None, feature_converter_cls=None, label_smoothing=0.0, z_loss=0.0, "
                "loss_normalizing_factor=None")],
    "partitioning": [("PjitPartitioner", "num_partitions=None, model_parallel_submesh=None, params_on_devices=True, "
                      "backend=None, logical_axis_rules=None")],
    "utils": [("DatasetConfig", "mixture_or_task_name, task_feature_lengths, split, batch_size, shuffle, seed, "
               "use_cached=False, pack=False, use_custom_packing_ops=False, module=None, use_memory_cache=True"),
              ("RestoreCheckpointConfig", "path, mode='latest', dtype='float32', strict=True"),
              ("SaveCheckpointConfig", "period=None, dtype='float32', keep=None, save_dataset=False"),
              ("CheckpointConfig", "save=None, restore=None")],
    "trainer": [("Trainer", "model=None, num_microbatches=None, learning_rate_fn=None")],
}
_STUB_FUNCTIONS = """
def standard_logical_factor_rules():
    return {}
def standard_logical_axis_rules():
    return ()
def create_learning_rate_scheduler(factors='constant', base_learning_rate=0.1, warmup_steps=1000):
    return None
"""
# eval.gin and infer.gin alike: one device, the 'test' split, one checkpoint.
_STUB_READ_CHECKPOINT_AND_TEST_SPLIT = """
        partitioning.PjitPartitioner.num_partitions = 1
        utils.DatasetConfig:
          mixture_or_task_name = %MIXTURE_OR_TASK_NAME
          task_feature_lengths = %TASK_FEATURE_LENGTHS
          split = 'test'
          batch_size = 32
          shuffle = False
          seed = 42
        utils.RestoreCheckpointConfig:
          path = %CHECKPOINT_PATH
          mode = 'specific'
"""
_STUB_RUN_GINS = {
    "pretrain": """
        from __gin__ import dynamic_registration
        import __main__ as train_script
        from t5x import partitioning
        from t5x import trainer
        from t5x import utils
        MIXTURE_OR_TASK_NAME = %gin.REQUIRED
        TASK_FEATURE_LENGTHS = %gin.REQUIRED
        TRAIN_STEPS = %gin.REQUIRED
        MODEL_DIR = %gin.REQUIRED
        BATCH_SIZE = 128
        USE_CACHED_TASKS = True
        train_script.train:
          model = %MODEL
          model_dir = %MODEL_DIR
          train_dataset_cfg = @train/utils.DatasetConfig()
          train_eval_dataset_cfg = @train_eval/utils.DatasetConfig()
          infer_eval_dataset_cfg = None
          checkpoint_cfg = @utils.CheckpointConfig()
          partitioner = @partitioning.PjitPartitioner()
          trainer_cls = @trainer.Trainer
          total_steps = %TRAIN_STEPS
          eval_steps = 20
          eval_period = 1000
        partitioning.PjitPartitioner:
          num_partitions = 1
          logical_axis_rules = @partitioning.standard_logical_axis_rules()
        train/utils.DatasetConfig:
          mixture_or_task_name = %MIXTURE_OR_TASK_NAME
          task_feature_lengths = %TASK_FEATURE_LENGTHS
          split = 'train'
          batch_size = %BATCH_SIZE
          shuffle = True
          seed = None
          use_cached = %USE_CACHED_TASKS
          pack = True
        train_eval/utils.DatasetConfig:
          mixture_or_task_name = %MIXTURE_OR_TASK_NAME
          task_feature_lengths = %TASK_FEATURE_LENGTHS
          split = 'validation'
          batch_size = %BATCH_SIZE
          shuffle = False
          seed = 42
          use_cached = %USE_CACHED_TASKS
          pack = True
        utils.CheckpointConfig:
          restore = @utils.RestoreCheckpointConfig()
          save = @utils.SaveCheckpointConfig()
        utils.RestoreCheckpointConfig.path = []
        utils.SaveCheckpointConfig.period = 1000
        trainer.Trainer.learning_rate_fn = @utils.create_learning_rate_scheduler()
    """,
    "eval": """
        from __gin__ import dynamic_registration
        import __main__ as eval_script
        from t5x import partitioning
        from t5x import utils
        MIXTURE_OR_TASK_NAME = %gin.REQUIRED
        CHECKPOINT_PATH = %gin.REQUIRED
        EVAL_OUTPUT_DIR = %gin.REQUIRED
        TASK_FEATURE_LENGTHS = None
        eval_script.evaluate:
          model = %MODEL
          dataset_cfg = @utils.DatasetConfig()
          partitioner = @partitioning.PjitPartitioner()
          restore_checkpoint_cfg = @utils.RestoreCheckpointConfig()
          output_dir = %EVAL_OUTPUT_DIR
    """ + _STUB_READ_CHECKPOINT_AND_TEST_SPLIT,
    "infer": """
        from __gin__ import dynamic_registration
        import __main__ as infer_script
        from t5x import partitioning
        from t5x import utils
        MIXTURE_OR_TASK_NAME = %gin.REQUIRED
        TASK_FEATURE_LENGTHS = %gin.REQUIRED
        CHECKPOINT_PATH = %gin.REQUIRED
        INFER_OUTPUT_DIR = %gin.REQUIRED
        infer_script.infer:
          mode = 'predict'
          model = %MODEL
          output_dir = %INFER_OUTPUT_DIR
          dataset_cfg = @utils.DatasetConfig()
          partitioner = @partitioning.PjitPartitioner()
          restore_checkpoint_cfg = @utils.RestoreCheckpointConfig()
          checkpoint_period = 100
        utils.RestoreCheckpointConfig.dtype = 'bfloat16'
    """ + _STUB_READ_CHECKPOINT_AND_TEST_SPLIT,
}
# The entry functions of t5x's scripts (their keyword arguments), each returning what gin passed.
_STUB_SCRIPTS = {
    "train": "def train(*, model, model_dir, train_dataset_cfg, train_eval_dataset_cfg, checkpoint_cfg, partitioner, "
             "trainer_cls, total_steps, eval_steps, eval_period, infer_eval_dataset_cfg=None, relative_steps=None, "
             "random_seed=None, use_hardware_rng=False, summarize_config_fn=None):\n    return locals()\n",
    "evaluate": "def evaluate(*, model, dataset_cfg, restore_checkpoint_cfg, partitioner, output_dir, "
                "inference_evaluator_cls=None, training_evaluator_cls=None, fallback_init_rng=None, use_orbax=True):"
                "\n    return locals()\n",
    "infer": "def infer(*, mode, model, dataset_cfg, restore_checkpoint_cfg, partitioner, output_dir, "
             "checkpoint_period, shard_id=0, num_shards=1, write_fn=None, fallback_init_rng=None):\n"
             "    return locals()\n"
             "def write_inferences_to_file(path, inferences, task_ds, mode, vocabulary=None, json_encoder_cls=None,"
             " include_all_inputs=False, input_fields_to_include=None, output_ids=False):\n    return locals()\n",
}


def gin_statements(path: pathlib.Path) -> list:
    """The statements of one gin file, by gin's own parser."""
    with open(path) as f:
        return list(config_parser.ConfigParser(f, gin.config.ParserDelegate(skip_unknown=True)))


def includes(path: pathlib.Path) -> list[str]:
    return [s.filename for s in gin_statements(path) if isinstance(s, config_parser.IncludeStatement)]


def own_bindings(path: pathlib.Path) -> set[str]:
    """``selector.arg`` (or the macro name) of each binding the file itself makes."""
    return {".".join(filter(None, (s.selector, s.arg_name))) for s in gin_statements(path)
            if isinstance(s, config_parser.BindingStatement)}


@pytest.fixture(scope="module")
def stub_t5x(tmp_path_factory):
    """The stub t5x tree (modules and run gins), importable, and the ``__main__`` of each script."""
    root = tmp_path_factory.mktemp("t5x_stub")
    runs = root / "t5x" / "configs" / "runs"
    runs.mkdir(parents=True)
    for package in ("t5x", "t5x/configs", "t5x/configs/runs"):
        (root / package / "__init__.py").write_text("")
    for name, classes in _STUB_MODULES.items():
        records = "".join(_RECORD.format(name=c, args=a) for c, a in classes)
        (root / "t5x" / f"{name}.py").write_text(records + _STUB_FUNCTIONS)
    for name, text in _STUB_RUN_GINS.items():
        (runs / f"{name}.gin").write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    scripts = {}
    for entry, source in _STUB_SCRIPTS.items():
        module = types.ModuleType("__main__")
        exec(compile(source, f"<stub t5x {entry}>", "exec"), module.__dict__)
        # As t5x's scripts do before parsing: gin.configurable(train) in its __main__.
        scripts[entry] = (module, gin.configurable(getattr(module, entry)))
    yield root, scripts
    sys.path.remove(str(root))


def run_as_t5x(stub_t5x, monkeypatch, gin_file: str, then=lambda run: run):
    """Parses ``gin/<gin_file>`` as ``python -m t5x.<script>`` from the repository root; ``then`` of the entry's call."""
    root, scripts = stub_t5x
    module, entry = scripts[ENTRY_GINS[gin_file]]
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(sys.modules, "__main__", module)
    # t5x's search paths: '' (gin's own), its --gin_search_paths default '.', then the folder above t5x.
    monkeypatch.setattr(gin.config, "_LOCATION_PREFIXES", ["", ".", str(root)])
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings([f"gin/{gin_file}"], COMMAND_BINDINGS[ENTRY_GINS[gin_file]])
        return then(entry())
    finally:
        gin.clear_config()


def test_every_top_level_gin_is_an_entry_or_included_by_one():
    entries, shared = set(ENTRY_GINS), set()
    for name in entries:
        shared.update(pathlib.Path(p).name for p in includes(REPO / "gin" / name) if p.startswith("gin/"))
    assert {p.name for p in (REPO / "gin").glob("*.gin")} == entries | shared


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "gin").glob("*.gin")))
def test_includes_resolve_from_the_repository_root_or_t5x(name):
    """A bare 'prot_t5_xl.gin' is looked up in '', '.' and t5x's folder: only repository-root paths work."""
    for path in includes(REPO / "gin" / name):
        if path.startswith("t5x/"):
            assert path in {f"t5x/configs/runs/{run}.gin" for run in T5X_RUN_GINS.values()}, (name, path)
        else:
            assert path.startswith("gin/") and (REPO / path).is_file(), (name, path)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "gin").glob("*.gin")))
def test_imported_modules_exist(name):
    for statement in gin_statements(REPO / "gin" / name):
        if isinstance(statement, config_parser.ImportStatement) and not statement.module.startswith(
            ("__gin__", "__main__", "t5x")
        ):
            assert importlib.util.find_spec(statement.module) is not None, (name, statement.module)


@pytest.mark.parametrize("twin, full", sorted(TWINS.items()))
def test_tiny_twin_includes_its_full_gin_and_changes_only_sizes_and_steps(twin, full):
    twin_includes = includes(REPO / "gin" / twin)
    assert twin_includes[0] == f"gin/{full}"
    changed = own_bindings(REPO / "gin" / twin)
    for shared in twin_includes[1:]:
        changed |= own_bindings(REPO / shared)
    assert changed <= TWIN_MAY_SET, changed - TWIN_MAY_SET


@pytest.mark.parametrize("gin_file", sorted(ENTRY_GINS))
def test_entry_gin_builds_our_model_and_task_under_t5x(stub_t5x, monkeypatch, gin_file):
    run = run_as_t5x(stub_t5x, monkeypatch, gin_file)
    tiny = "tiny" in gin_file
    model = run["model"]
    assert isinstance(model.module, t5.T5EncoderDecoder)
    expected = configs.get_config(
        "prot_t5_tiny" if tiny else "prot_t5_xl_u50",
        dtype="float32" if tiny else "bfloat16",
        dropout_rate=0.0 if tiny else 0.1,
    )
    assert model.module.config == expected
    assert model.input_vocabulary == model.output_vocabulary == ProtT5Vocabulary()
    assert run["partitioner"].num_partitions == (1 if tiny else 2)

    datasets = [run["train_dataset_cfg"], run["train_eval_dataset_cfg"]] if "train_dataset_cfg" in run else [
        run["dataset_cfg"]]
    for cfg in datasets:
        task = seqio.get_mixture_or_task(cfg.mixture_or_task_name)
        assert cfg.mixture_or_task_name == ("demo_prot_t5_denoise" if tiny else "uniref50_prot_t5_denoise")
        assert cfg.split in task.splits
        assert set(cfg.task_feature_lengths) == set(task.output_features) == {"inputs", "targets"}
        # t5x's verify_matching_vocabs
        assert task.output_features["targets"].vocabulary == model.output_vocabulary
    if "dataset_cfg" in run:
        # t5x.eval refuses a task without metrics on the split; t5x.infer reads the same split.
        assert seqio.evaluation.get_valid_eval_tasks([task], run["dataset_cfg"].split) == [task]
        assert run["restore_checkpoint_cfg"].path == "/tmp/run/checkpoint_100"


def test_infer_gin_writes_the_input_ids_beside_each_prediction(stub_t5x, monkeypatch):
    run, written = run_as_t5x(
        stub_t5x, monkeypatch, "prot_t5_tiny_t5x_infer.gin", then=lambda run: (run, run["write_fn"]("o", [], None, "p"))
    )
    task = seqio.get_mixture_or_task(run["dataset_cfg"].mixture_or_task_name)
    assert set(written["input_fields_to_include"]) == set(task.output_features)
    assert run["output_dir"] == "/tmp/run/infer"


def test_training_gin_under_t5x_eval_fails_as_t5x_does(stub_t5x, monkeypatch):
    """The stub's __main__ ties a gin to its script, so this suite sees what the eval gins fixed."""
    monkeypatch.setitem(ENTRY_GINS, "prot_t5_tiny_t5x.gin", "evaluate")
    with pytest.raises(AttributeError, match="Couldn't resolve selector train_script.train"):
        run_as_t5x(stub_t5x, monkeypatch, "prot_t5_tiny_t5x.gin")


def test_reconstruction_metrics():
    targets, predictions = ["ACDE", "GH", "KL"], ["ACDF", "G", "KL"]
    assert metrics.residue_accuracy(targets, predictions)["residue_accuracy"] == pytest.approx(100 * 6 / 8)
    assert metrics.sequence_accuracy(targets, predictions)["sequence_accuracy"] == pytest.approx(100 / 3)
