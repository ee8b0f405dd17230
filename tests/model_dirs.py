"""Test helper: tiny models of every family with random (perturbed) weights, saved as our trainer saves them."""

import jax
import numpy as np

from prottrans_jax import checkpoints, config_io, model_io
from prottrans_jax.models import configs

TINY_CONFIGS = {"t5": "prot_t5_tiny", "bert": "prot_bert_tiny", "albert": "prot_albert_tiny",
                "electra": "prot_electra_tiny", "xlnet": "prot_xlnet_tiny", "transfo_xl": "prot_txl_tiny"}


def random_params(config, seed=0):
    """Initialised params with every leaf perturbed (norm scales and biases leave 1 and 0)."""
    module = configs.build_model(config)
    params = jax.jit(lambda k: module.init(k, **module.dummy_inputs())["params"])(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32),
                                  params)


def write_model_dir(path, family, seed=0, step=7):
    """``path/checkpoint_<step>`` with params and the metadata our trainer writes; returns (config, params)."""
    config = configs.get_config(TINY_CONFIGS[family])
    params = random_params(config, seed)
    meta = {"model_config": config_io.config_to_dict(config),
            "architecture": model_io.ARCHITECTURE_OF_CONFIG[type(config)], "model": type(config).__name__}
    with checkpoints.TrainCheckpointer(str(path), async_save=False, save_every=1) as ckpt:
        ckpt.save(step, {"params": params, "step": step}, meta, force=True)
    return config, params


def write_fasta(path, records):
    """records: {id: sequence} -> a FASTA file (60 residues a line)."""
    with open(path, "w") as f:
        for rid, seq in records.items():
            f.write(f">{rid} some description\n")
            for i in range(0, len(seq), 60):
                f.write(seq[i:i + 60] + "\n")
    return path
