"""A two-process jax.distributed run on localhost (CPU, gloo collectives): 2 hosts x 4 devices train and checkpoint.

Each host reads its own shard of the data, and the run equals one process training on the same global batches.
"""

import itertools
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import seqio

import prottrans_jax_tasks
from prottrans_jax import pipeline, train, training_loop
from prottrans_jax.hf import checkpoint_reader

LENGTHS = {"inputs": 64, "targets": 64}
STEPS, BATCH = 4, 8

WORKER = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
import numpy as np
from prottrans_jax import train, training_loop
pid, port, model_dir, fasta, record_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
import prottrans_jax_tasks
prottrans_jax_tasks.register_fasta_tasks("dist", fasta, objectives=("prot_t5_denoise",))
read = training_loop.host_batches


def recorded(task, lengths, batch_size, split, *args, **kwargs):  # keeps what this host trains on
    for i, batch in enumerate(read(task, lengths, batch_size, split, *args, **kwargs)):
        if split == "train":
            np.savez(os.path.join(record_dir, f"host{pid}_step{i + 1}.npz"), **batch)
        yield batch


training_loop.host_batches = recorded
rc = train.main([*sys.argv[6:],
    f"--gin.train_script.train.distributed={{'coordinator_address': '127.0.0.1:{port}', 'num_processes': 2, 'process_id': {pid}}}",
])
print(f"RESULT process={jax.process_index()} devices={jax.device_count()} local={jax.local_device_count()} rc={rc}", flush=True)
"""


def _gin_args(model_dir):
    return ["--gin_file=runs/prot_t5_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={STEPS}",
            f"--gin.BATCH_SIZE={BATCH}", "--gin.MIXTURE_OR_TASK_NAME='dist_prot_t5_denoise'",
            f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}", "--gin.train_script.train.log_every=2",
            f"--gin.train_script.train.checkpoint_every={STEPS}", "--gin.train_script.train.peak_flops_per_device=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(model_dir):
    """The whole train state at the last step, as host numpy (whatever topology wrote it)."""
    step_dir = str(model_dir / f"checkpoint_{STEPS}")
    return {k: checkpoint_reader.restore_subtree_numpy(step_dir, k) for k in checkpoint_reader.state_keys(step_dir)}


def _host_batches(record_dir, host):
    return [dict(np.load(record_dir / f"host{host}_step{step}.npz")) for step in range(1, STEPS + 1)]


def test_two_processes_train_together_as_one_process_would(tmp_path, demo_corpus, monkeypatch, capsys):
    port, record_dir = str(_free_port()), tmp_path / "batches"
    record_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(i), port, str(tmp_path / "run"), str(demo_corpus),
                          str(record_dir), *_gin_args(tmp_path / "run")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for i, out in enumerate(outputs):
        assert f"RESULT process={i} devices=8 local=4 rc=0" in out, out[-3000:]
    # Process 0 logs; both took part in the same steps and in the checkpoint.
    assert f"[train step {STEPS}]" in outputs[0]
    assert (tmp_path / "run" / f"checkpoint_{STEPS}" / "commit_success.txt").exists()

    # Host i read shard i of the task (seqio ShardInfo), half the global batch each, no protein on both.
    prottrans_jax_tasks.register_fasta_tasks("dist", str(demo_corpus), objectives=("prot_t5_denoise",))
    hosts = [_host_batches(record_dir, i) for i in range(2)]
    for i, batches in enumerate(hosts):
        shard = pipeline.get_dataset("dist_prot_t5_denoise", batch_size=BATCH // 2, split="train", seed=0, pack=False,
                                     shard_info=seqio.ShardInfo(i, 2), feature_lengths=LENGTHS)
        for got, want in zip(batches, itertools.islice(pipeline.numpy_batches(shard), STEPS)):
            assert got.keys() == want.keys()
            for k in got:
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"host {i}: {k}")
    rows = [{r.tobytes() for b in batches for r in b["decoder_target_tokens"]} for batches in hosts]
    assert len(rows[0]) == len(rows[1]) == STEPS * BATCH // 2 and not rows[0] & rows[1]

    # One process (8 local devices) on the same global batches (host 0's rows, then host 1's) ends in the same state.
    global_batches = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*hosts)]
    monkeypatch.setattr(training_loop, "host_batches",
                        lambda task, lengths, batch_size, split, *a, **kw: iter(global_batches))
    assert train.main(_gin_args(tmp_path / "single")) == 0
    assert f"[train step {STEPS}]" in capsys.readouterr().out
    two, one = _state(tmp_path / "run"), _state(tmp_path / "single")
    assert int(two["step"]) == int(one["step"]) == STEPS and set(two) >= {"params", "opt_state"}
    assert jax.tree_util.tree_structure(two) == jax.tree_util.tree_structure(one)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(two)[0], jax.tree_util.tree_leaves(one)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
