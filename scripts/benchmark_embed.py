"""Embedding throughput: ``prottrans-jax embed`` vs the ProtTrans way (HF T5EncoderModel on torch), same weights.

A ProtT5-style encoder with random weights is written once as our checkpoint and exported to a HF
folder; each system then embeds the same proteins of the demo corpus (per-protein means into HDF5)
in its own process, so each process's peak memory is its own. The torch side follows ProtTrans'
embedding script: sequences sorted by length (longest first), batches of up to 100 sequences or
4,000 residues, sequences over 1,000 residues alone, the HF tokenizer on space-separated residues.
Residues/s counts residues (no special tokens or padding) over the wall time of the whole job,
model loading and (for JAX) compilation included; "steady" excludes loading and the first batch of
each shape.

With ``--compile-cache`` the JAX side runs twice with one fresh persistent compilation cache (what
``prottrans-jax embed`` uses by default): the first run compiles and fills it, the second loads every
shape from it; both rows are printed with the compile seconds the cache saved.

Usage: python scripts/benchmark_embed.py [--proteins 1000] [--model bench|xl] [--dtype float32]
       [--systems jax,torch] [--devices N] [--compile-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO.parent / "shared" / "data" / "pretrain" / "demo_corpus.fasta.gz"
# ProtT5-style: ReLU feed-forward, relative attention (32 buckets), vocab 128, ~42 M encoder parameters.
MODELS = {
    "bench": dict(d_model=512, d_kv=64, num_heads=8, d_ff=4096, num_encoder_layers=8, num_decoder_layers=1),
    "xl": dict(num_decoder_layers=1),  # ProtT5-XL's encoder (1.2 B); a 1-layer decoder keeps export small
}


def prepare(workdir: pathlib.Path, model: str, proteins: int, seed: int = 0) -> tuple[pathlib.Path, pathlib.Path,
                                                                                     pathlib.Path, int]:
    """Writes the model (ours + HF export of the same weights) and the FASTA subset; returns paths, #params."""
    import jax
    import numpy as np

    from prottrans_jax import checkpoints, config_io, fasta, model_io
    from prottrans_jax.hf import export
    from prottrans_jax.models import configs

    config = configs.get_config("prot_t5_xl_u50", dropout_rate=0.0, **MODELS[model])
    module = configs.build_model(config, encoder_only=False)
    params = jax.jit(lambda k: module.init(k, **module.dummy_inputs())["params"])(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.02 * rng.standard_normal(x.shape, np.float32), params)
    run = workdir / "run"
    meta = {"model_config": config_io.config_to_dict(config), "architecture": "T5ForConditionalGeneration"}
    with checkpoints.TrainCheckpointer(str(run), async_save=False, save_every=1) as ckpt:
        ckpt.save(1, {"params": params, "step": 1}, meta, force=True)
    hf_dir = export.export_model(model_io.load_model(run), workdir / "hf", encoder_only=True)
    records = list(fasta.read_fasta(str(DEMO)))[:proteins]
    fasta_path = workdir / "proteins.fasta"
    fasta_path.write_text("".join(f">{r.id}\n{r.sequence}\n" for r in records))
    n_params = configs.count_params(config, encoder_only=True)
    return run, hf_dir, fasta_path, n_params


def worker_jax(run: str, fasta_path: str, out: str, dtype: str, devices: int, cache: str | None = None) -> dict:
    import jax
    import jax.monitoring

    from prottrans_jax import compile_cache, embed

    if cache:  # as `prottrans-jax embed --compile-cache DIR` does
        compile_cache.configure(argparse.Namespace(compile_cache=cache, no_compile_cache=False))
    events: dict[str, float] = {}
    jax.monitoring.register_event_listener(lambda name, **kw: events.__setitem__(name, events.get(name, 0) + 1))
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: events.__setitem__(name, events.get(name, 0) + secs))
    t0 = time.perf_counter()
    summary = embed.embed_fasta(run, fasta_path, out, per_protein=True, dtype=dtype, progress=False,
                                devices=jax.local_devices()[:devices] if devices else None)
    total = time.perf_counter() - t0
    cached = {k.rsplit("/", 1)[-1]: round(v, 2) for k, v in events.items() if k.rsplit("/", 1)[-1] in (
        "cache_hits", "cache_misses", "compile_time_saved_sec", "backend_compile_duration")}
    return {"residues": summary.residues, "seconds": total, "embed_seconds": summary.seconds,
            "compiled_shapes": summary.compiled_shapes, "devices": jax.local_device_count() if not devices else devices,
            **cached}


def worker_torch(hf_dir: str, fasta_path: str, out: str, dtype: str) -> dict:
    """ProtTrans' embedding script, minus its download: same batching rules, per-protein means to HDF5."""
    import h5py
    import torch
    from transformers import T5EncoderModel, T5Tokenizer

    t0 = time.perf_counter()
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = T5EncoderModel.from_pretrained(hf_dir, dtype=torch_dtype).eval()
    tokenizer = T5Tokenizer.from_pretrained(hf_dir)
    seqs = {}
    for block in pathlib.Path(fasta_path).read_text().split(">")[1:]:
        header, *lines = block.splitlines()
        seqs[header.split()[0]] = "".join(lines)
    items = sorted(seqs.items(), key=lambda kv: len(kv[1]), reverse=True)
    max_residues, max_seq_len, max_batch = 4000, 1000, 100
    results, batch, steady_t0, residues = {}, [], None, 0
    for idx, (pid, seq) in enumerate(items, 1):
        batch.append((pid, " ".join(seq), len(seq)))
        n_res = sum(s_len for _, _, s_len in batch) + len(seq)
        if len(batch) >= max_batch or n_res >= max_residues or idx == len(items) or len(seq) > max_seq_len:
            ids = tokenizer([s for _, s, _ in batch], add_special_tokens=True, padding="longest", return_tensors="pt")
            with torch.inference_mode():
                hidden = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
            for row, (name, _, s_len) in enumerate(batch):
                results[name] = hidden[row, :s_len].float().mean(dim=0).numpy()
                residues += s_len
            batch = []
            steady_t0 = steady_t0 or time.perf_counter()
    with h5py.File(out, "w") as f:
        for name, emb in results.items():
            f.create_dataset(name.replace("/", "_").replace(".", "_"), data=emb)
    return {"residues": residues, "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's from before exec)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(system: str, args, paths, cache: str | None = None, tag: str = "") -> dict:
    run, hf_dir, fasta_path = paths
    out = pathlib.Path(args.workdir) / f"{system}{tag}.h5"
    cmd = [sys.executable, __file__, "--worker", system, "--dtype", args.dtype, "--run", str(run), "--hf", str(hf_dir),
           "--fasta", str(fasta_path), "--out", str(out), "--devices", str(args.devices)]
    cmd += ["--cache-dir", cache] if cache else []
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode:
        raise RuntimeError(f"{system} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_outputs(workdir: pathlib.Path) -> float:
    import h5py
    import numpy as np

    with h5py.File(workdir / "jax.h5") as a, h5py.File(workdir / "torch.h5") as b:
        return max(float(np.max(np.abs(a[k][()] - b[k][()]))) for k in b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proteins", type=int, default=1000, help="first N proteins of the demo corpus")
    p.add_argument("--model", default="bench", choices=sorted(MODELS))
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--systems", default="jax,torch")
    p.add_argument("--devices", type=int, default=0, help="JAX devices to use (0: all)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--compile-cache", action="store_true",
                   help="run JAX twice with one fresh persistent compilation cache (cold, then warm)")
    p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--hf", default=None, help=argparse.SUPPRESS)
    p.add_argument("--fasta", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        if args.worker == "jax":
            from prottrans_jax import train

            os.environ["XLA_FLAGS"] = train.default_cpu_xla_flags()  # as the CLI does
            result = worker_jax(args.run, args.fasta, args.out, args.dtype, args.devices, args.cache_dir)
        else:
            result = worker_torch(args.hf, args.fasta, args.out, args.dtype)
        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="bench_embed_")
    workdir = pathlib.Path(args.workdir)
    run, hf_dir, fasta_path, n_params = prepare(workdir, args.model, args.proteins)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; encoder {n_params / 1e6:.1f} M parameters; {args.proteins} proteins; {args.dtype}")
    rows = {}
    for system in args.systems.split(","):
        cache = str(workdir / "xla") if system == "jax" and args.compile_cache else None
        for tag in ("", "_warm") if cache else ("",):
            rows[system + tag] = r = run_worker(system, args, (run, hf_dir, fasta_path), cache, tag)
            print(f"{system + tag:9s} {r['residues'] / r['seconds']:10,.0f} residues/s  {r['seconds']:8.1f} s  "
                  f"peak RSS {r['peak_rss_mib']:,.0f} MiB  {json.dumps(r)}", flush=True)
    if "jax_warm" in rows:
        cold, warm = rows["jax"]["seconds"], rows["jax_warm"]["seconds"]
        print(f"compilation cache: the warm run took {warm:.1f} s vs {cold:.1f} s cold ({cold - warm:.1f} s, "
              f"{(cold - warm) / cold:.0%} saved; {rows['jax_warm'].get('cache_hits', 0)} shapes loaded)")
    if {"jax", "torch"} <= rows.keys():
        ratio = (rows["jax"]["residues"] / rows["jax"]["seconds"]) / (rows["torch"]["residues"] / rows["torch"]["seconds"])
        print(f"jax / torch residues/s: {ratio:.2f}x; max |difference| of per-protein embeddings: "
              f"{compare_outputs(workdir):.2e}")


if __name__ == "__main__":
    main()
