"""Every run gin of our trainer parses, names a registered model and task, and fits model to objective."""

import pathlib

import gin
import pytest

from prottrans_jax import model_adapters, pipeline, train
from prottrans_jax.models import configs

RUNS = sorted(p.name for p in (pathlib.Path(train.GIN_DIR) / "runs").glob("*.gin") if not p.name.startswith("_"))


def test_every_released_size_and_tiny_twin_has_a_run_gin():
    for name in ("prot_t5_xl", "prot_t5_xxl", "prot_bert", "prot_albert", "prot_electra"):
        assert f"{name}.gin" in RUNS
    assert {"prot_t5_tiny.gin", "prot_bert_tiny.gin", "prot_albert_tiny.gin", "prot_electra_tiny.gin"} <= set(RUNS)


@pytest.mark.parametrize("run", RUNS)
def test_run_gin_parses_and_fits(run):
    gin.clear_config()
    try:
        train.configure([f"runs/{run}"], ["MODEL_DIR='/tmp/unused'"])
        name = gin.query_parameter("configs.get_config.name")
        overrides = {"dtype": gin.query_parameter("configs.get_config.dtype")} if "bfloat16" in gin.config_str() else {}
        config = configs.get_config(name, **overrides)
        task = gin.query_parameter("MIXTURE_OR_TASK_NAME/macro.value")
        lengths = gin.query_parameter("TASK_FEATURE_LENGTHS/macro.value")
        objective = pipeline.check_task(task)
        model_adapters.adapt(config, objective, lengths)  # raises if the family cannot train the objective
    finally:
        gin.clear_config()
