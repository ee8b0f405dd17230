"""Peak memory of the embedding encoder on long proteins, against the bound ``embed`` plans with (limits.peak_bytes).

Usage: python scripts/check_long_sequence.py [--config prot_t5_xl_u50] [--lengths 5000] [--dtype float32]
       [--set '{"num_heads": 8}'] [--rows 1]
Each length runs in its own process on one device (weights random: memory and time do not depend on
their values): it prints the default --max-length there, the wall time of the call, and the peak RSS
the call added (VmHWM minus the RSS before it, compilation included) beside the bound.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

SEQ = ("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDR"
       "LSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRH"
       "DVRAPDYDDWXTX")


def _status(key: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    line = next(s for s in pathlib.Path("/proc/self/status").read_text().splitlines() if s.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def measure(config_name: str, length: int, overrides: dict, dtype: str, rows: int) -> dict:
    """One encoder call on ``rows`` copies of a ``length``-residue protein; memory figures in bytes."""
    from prottrans_jax import train

    os.environ["XLA_FLAGS"] = train.default_cpu_xla_flags()
    import jax

    from prottrans_jax import embed, model_io
    from prottrans_jax.embedding import limits
    from prottrans_jax.embedding.encoder import Embedder
    from prottrans_jax.models import configs

    config = configs.get_config(config_name, **overrides)
    module = configs.build_model(config, encoder_only=True)
    params = jax.device_get(jax.jit(lambda k: module.init(k, **module.dummy_inputs())["params"])(jax.random.key(0)))
    arch = "T5EncoderModel" if type(config).__name__ == "T5Config" else "BertModel"
    embedder = Embedder(model_io.LoadedModel(config, params, arch, f"random {config_name}"), dtype=dtype,
                        devices=jax.local_devices()[:1])
    del params
    dtype_bytes = 4 if dtype == "float32" else 2
    seq = (SEQ * (length // len(SEQ) + 1))[:length]
    tokens = length + embedder.special_tokens
    default = embed.default_max_length(embedder, dtype_bytes)  # with the weights loaded, before the call
    before = _status("VmRSS")
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # restart the peak count (VmHWM) here
    t0 = time.perf_counter()
    per_res, _ = embedder.embed([seq] * rows, rows, tokens, per_residue=True)
    return dict(config=config_name, overrides=overrides, dtype=dtype, rows=rows, tokens=tokens,
                seconds=time.perf_counter() - t0, rss_before=before, added=_status("VmHWM") - before,
                bound=limits.peak_bytes(embedder.config, tokens, dtype_bytes, rows),
                default_max_length=default, output=list(per_res[0].shape))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="prot_t5_xl_u50", help="a named model config")
    p.add_argument("--lengths", default="5000", help="comma-separated protein lengths (residues)")
    p.add_argument("--set", default="{}", help="config overrides as JSON, e.g. '{\"num_heads\": 8}'")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--rows", type=int, default=1, help="copies of the protein in the batch")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    overrides = json.loads(args.set)
    if "t5" in args.config:
        overrides.setdefault("dropout_rate", 0.0)
    if args.worker is not None:
        print(json.dumps(measure(args.config, args.worker, overrides, args.dtype, args.rows)))
        return
    gib = 1024 ** 3
    for length in map(int, args.lengths.split(",")):
        cmd = [sys.executable, __file__, "--config", args.config, "--set", json.dumps(overrides), "--dtype", args.dtype,
               "--rows", str(args.rows), "--worker", str(length)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "XLA_FLAGS": ""})
        if proc.returncode:
            sys.exit(f"length {length} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{args.config} {json.dumps(r['overrides'])} {args.dtype} rows {args.rows} x {r['tokens']} tokens: "
              f"{r['seconds']:.0f} s, output {tuple(r['output'])}; peak added {r['added'] / gib:.3f} GiB (RSS before "
              f"{r['rss_before'] / gib:.2f} GiB), bound {r['bound'] / gib:.3f} GiB ({r['added'] / r['bound']:.0%} of "
              f"it); default --max-length here {r['default_max_length']:,}", flush=True)


if __name__ == "__main__":
    main()
