"""TensorFlow/XLA start-up chatter stays out of the terminal; real errors and progress bars do not."""

import subprocess
import sys

from prottrans_jax import native_logs

SEEN_ON_CPU_MACHINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796309650.931334   11893 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "I0000 00:00:1796309650.937615   11893 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796309669.491917   11893 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796313403.752276    6688 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
]
REAL = [
    "E0000 00:00:1796309669.491917   11893 hlo_runner.cc:12] RESOURCE_EXHAUSTED: out of memory allocating 3 GiB",
    "F0000 00:00:1796309669.491917   11893 check.cc:9] Check failed: x == y",
    "Traceback (most recent call last):",
    "ValueError: something real",
    "prottrans-jax embed: error: in.fa, line 3: bad residue",
]


def test_known_chatter_is_noise_and_real_errors_are_not():
    assert all(native_logs.is_noise(line) for line in SEEN_ON_CPU_MACHINES)
    assert not any(native_logs.is_noise(line) for line in REAL)


def test_the_filter_drops_noise_and_passes_everything_else_in_order():
    code = f"""
import os, sys
from prottrans_jax import native_logs
with native_logs.quiet_native_startup():
    for line in {SEEN_ON_CPU_MACHINES + REAL!r}:
        os.write(2, (line + "\\n").encode())
    os.write(2, b"\\rembedding:  50%|#####     |")   # a progress bar's update: no newline
    os.write(2, b"\\rembedding: 100%|##########|\\n")
    print("python-level message", file=sys.stderr)
    os.write(2, b"E0000 00:00:1.5  7 cuda_executor.cc:1] failed call to cuInit: split")
    os.write(2, b" across two writes\\n")
print("after the block", file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.replace("\r", "\n").split("\n")
    lines = [x for x in lines if x]
    expected = REAL + ["embedding:  50%|#####     |", "embedding: 100%|##########|", "python-level message",
                       "after the block"]
    assert lines == expected


def test_the_filter_can_be_turned_off():
    code = ("import os; from prottrans_jax import native_logs\n"
            "with native_logs.quiet_native_startup():\n"
            f"    os.write(2, {SEEN_ON_CPU_MACHINES[3] + chr(10)!r}.encode())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PROTTRANS_JAX_NATIVE_LOGS": "1", "PATH": "/usr/bin:/bin"})
    assert "cuInit" in done.stderr


def test_preview_prints_no_start_up_chatter(tmp_path):
    done = subprocess.run([sys.executable, "-m", "prottrans_jax.cli", "preview", "--task", "demo_span_corruption",
                           "--num", "1", "--length", "32"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "[0] inputs" in done.stdout
    assert done.stderr.strip() == "", done.stderr
