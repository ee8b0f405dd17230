"""Embeds one long protein with a full-size encoder on this machine: wall time, peak memory, default max length.

Usage: python scripts/check_long_sequence.py [--config prot_t5_xl_u50] [--length 5000] [--dtype float32]
Weights are random (the memory and time of a forward pass do not depend on their values).
"""

import argparse
import os
import pathlib
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="prot_t5_xl_u50")
    p.add_argument("--length", type=int, default=5000)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    args = p.parse_args()
    from prottrans_jax import train

    os.environ["XLA_FLAGS"] = train.default_cpu_xla_flags()
    import jax

    from prottrans_jax import embed, model_io
    from prottrans_jax.embedding.encoder import Embedder
    from prottrans_jax.models import configs

    config = configs.get_config(args.config, dropout_rate=0.0)
    module = configs.build_model(config, encoder_only=True)
    t0 = time.perf_counter()
    params = jax.jit(lambda k: module.init(k, **module.dummy_inputs())["params"])(jax.random.key(0))
    params = jax.device_get(params)
    arch = "T5EncoderModel" if type(config).__name__ == "T5Config" else "BertModel"
    model = model_io.LoadedModel(config, params, arch, f"random {args.config}")
    embedder = Embedder(model, dtype=args.dtype)
    del params, model
    print(f"init {time.perf_counter() - t0:.0f} s; default --max-length on this machine: "
          f"{embed.default_max_length(embedder, 4 if args.dtype == 'float32' else 2):,} residues", flush=True)
    seq = ("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWUTXB" * 100)[:args.length]
    seq = seq.replace("U", "X").replace("B", "X")
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # restart the peak-memory count (VmHWM) here
    t0 = time.perf_counter()
    per_res, pooled = embedder.embed([seq], 1, len(seq) + embedder.special_tokens, per_residue=True)
    hwm = next(int(line.split()[1]) for line in pathlib.Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM:")) / 1024 ** 2
    print(f"{args.config} encoder, {args.length} residues, {args.dtype}: {time.perf_counter() - t0:.0f} s, "
          f"output {per_res[0].shape}, peak RSS during the pass {hwm:.1f} GiB (weights included)", flush=True)


if __name__ == "__main__":
    main()
