"""Test helper: tiny language models of any named config with random weights, as our trainer saves them."""

import jax
import numpy as np
from flax import traverse_util

from prottrans_jax import checkpoints, config_io, model_io
from prottrans_jax.models import configs

TINY_LM_CONFIGS = {"transfo_xl": "prot_txl_tiny", "xlnet": "prot_xlnet_tiny", "t5": "prot_t5_tiny",
                   "bert": "prot_bert_tiny", "albert": "prot_albert_tiny", "electra": "prot_electra_tiny"}


def quick_params(config, seed=0, std=0.1):
    """Random weights of the config's shapes without compiling ``init``: normal(std), norm scales 1 + normal(std)."""
    module = configs.build_model(config)
    shapes = jax.eval_shape(lambda k: module.init(k, **module.dummy_inputs())["params"], jax.random.key(0))
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(shapes)
    out = {k: (k[-1] == "scale") + std * rng.standard_normal(v.shape).astype(np.float32) for k, v in flat.items()}
    return traverse_util.unflatten_dict(out)


def write_lm_dir(path, family, seed=0, step=3, params=None):
    """``path/checkpoint_<step>`` of the family's tiny config (random weights unless given); returns params."""
    config = configs.get_config(TINY_LM_CONFIGS[family])
    params = quick_params(config, seed) if params is None else params
    meta = {"model_config": config_io.config_to_dict(config),
            "architecture": model_io.ARCHITECTURE_OF_CONFIG[type(config)], "model": type(config).__name__}
    with checkpoints.TrainCheckpointer(str(path), async_save=False, save_every=1) as ckpt:
        ckpt.save(step, {"params": params, "step": step}, meta, force=True)
    return params
