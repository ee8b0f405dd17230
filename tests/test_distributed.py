"""A two-process jax.distributed run on localhost (CPU, gloo collectives): 2 hosts x 4 devices train and checkpoint."""

import os
import socket
import subprocess
import sys

WORKER = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
from prottrans_jax import train
pid, port, model_dir, fasta = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
import prottrans_jax_tasks
prottrans_jax_tasks.register_fasta_tasks("dist", fasta, objectives=("prot_t5_denoise",))
rc = train.main([
    "--gin_file=runs/prot_t5_tiny.gin", f"--gin.MODEL_DIR='{model_dir}'", "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=8",
    "--gin.MIXTURE_OR_TASK_NAME='dist_prot_t5_denoise'",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 64}", "--gin.train_script.train.log_every=2",
    "--gin.train_script.train.checkpoint_every=4",
    f"--gin.train_script.train.distributed={{'coordinator_address': '127.0.0.1:{port}', 'num_processes': 2, 'process_id': {pid}}}",
])
print(f"RESULT process={jax.process_index()} devices={jax.device_count()} local={jax.local_device_count()} rc={rc}", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together(tmp_path, demo_corpus):
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(i), port, str(tmp_path / "run"), str(demo_corpus)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for i, out in enumerate(outputs):
        assert f"RESULT process={i} devices=8 local=4 rc=0" in out, out[-3000:]
    # Process 0 logs; both took part in the same steps and in the checkpoint.
    assert "[train step 4]" in outputs[0]
    assert (tmp_path / "run" / "checkpoint_4" / "commit_success.txt").exists()
