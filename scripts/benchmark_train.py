"""Training-step throughput of a ProtT5-style model: our JAX trainer vs HuggingFace T5 on torch, same run.

Model: 6+6 layers, d_model 512, d_ff 2048, 8 heads of 64, ReLU, vocab 128; inputs and targets of
length 512; batch 8; Adafactor. Tokens/s counts input + target tokens (8 x 1024 per step). MFU is
the step's FLOPs (XLA cost analysis of our step; the same count is used for torch) over the
measured fp32 (or bf16) matmul peak of this machine.

Usage: python scripts/benchmark_train.py [--steps 5] [--jax-variants base,bf16,...] [--skip-torch]
"""

import argparse
import os
import platform
import time

import numpy as np


def matmul_peak_gflops(dtype: str = "float32") -> float:
    """Best sustained 2048x2048 jnp.dot rate on this machine (GFLOP/s)."""
    from prottrans_jax.device_peaks import measured_matmul_peak

    return measured_matmul_peak(n=2048, reps=10, dtype=dtype) / 1e9


def torch_matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    """Best torch.mm rate (fp32): the reference system's view of the same machine's peak."""
    import torch

    a = torch.ones(n, n)
    torch.mm(a, a)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, a)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def random_batch(batch: int, length: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    enc = rng.integers(3, 23, (batch, length)).astype(np.int32)
    tgt = rng.integers(3, 23, (batch, length)).astype(np.int32)
    dec_in = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1)
    ones = np.ones((batch, length), np.int32)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in, "decoder_target_tokens": tgt,
            "decoder_loss_weights": ones}


def bench_jax(variant: str, batch_np: dict, steps: int) -> dict:
    """Our trainer's step on one device; variant = comma-joined options (bf16, scan, remat)."""
    import jax
    import jax.numpy as jnp

    from prottrans_jax import model_adapters, objectives, optimizers, partitioning, trainer as trainer_lib
    from prottrans_jax.models import configs

    opts = set(variant.split("+")) - {"base"}
    overrides = {"dropout_rate": 0.1}
    if "bf16" in opts:
        overrides["dtype"] = jnp.bfloat16
    if "scan" in opts:
        overrides["scan_layers"] = True
    if "remat" in opts:
        overrides["remat_policy"] = "full"
    config = configs.get_config("prot_t5_small", **overrides)
    lengths = {"inputs": batch_np["encoder_input_tokens"].shape[1], "targets": batch_np["decoder_target_tokens"].shape[1]}
    module, logits_fn, init_inputs = model_adapters.adapt(config, "prot_t5_denoise", lengths)
    schedule = optimizers.make_schedule("rsqrt", 1e-2, 10_000)
    trainer = trainer_lib.Trainer(
        module=module, logits_fn=logits_fn, objective=objectives.EncoderDecoderObjective(),
        optimizer=optimizers.make_optimizer("adafactor", schedule), mesh=partitioning.make_mesh({"data": 1}, jax.devices()[:1]),
        rules="data", init_inputs=init_inputs,
    )
    state = trainer.init_state(0)
    batch = {k: jax.device_put(v, trainer.batch_sharding(v.ndim)) for k, v in batch_np.items()}
    flops = trainer.step_flops(state, batch)
    state, m = trainer.train_step(state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, m = trainer.train_step(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return {"step_s": float(np.median(times)), "flops": flops, "loss": float(m["loss"])}


def bench_torch(batch_np: dict, steps: int) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=128, d_model=512, d_kv=64, d_ff=2048, num_heads=8, num_layers=6,
                                num_decoder_layers=6, feed_forward_proj="relu", dropout_rate=0.1,
                                tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0)
    model = transformers.T5ForConditionalGeneration(cfg).train()
    opt = transformers.optimization.Adafactor(model.parameters(), lr=1e-2, relative_step=False, scale_parameter=False)
    ids = torch.tensor(batch_np["encoder_input_tokens"], dtype=torch.long)
    labels = torch.tensor(batch_np["decoder_target_tokens"], dtype=torch.long)

    def step():
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return float(loss.detach())

    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    return {"step_s": float(np.median(times)), "loss": loss, "threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--jax-variants", default="base", help="comma list of variants: base, bf16, scan, remat, bf16+scan")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--xla-flags", default=None,
                        help="XLA_FLAGS for this run (default: prottrans_jax.train's CPU default, oneDNN matmuls)")
    args = parser.parse_args()
    from prottrans_jax.train import default_cpu_xla_flags

    os.environ["XLA_FLAGS"] = args.xla_flags if args.xla_flags is not None else default_cpu_xla_flags()
    batch = random_batch(args.batch, args.length)
    tokens = args.batch * 2 * args.length
    peak32 = matmul_peak_gflops("float32")
    peak16 = matmul_peak_gflops("bfloat16")
    print(f"# {platform.node()} {platform.machine()} cores={os.cpu_count()} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    peak_torch = torch_matmul_peak_gflops()
    print(f"# matmul peak: XLA fp32 {peak32:.0f} GFLOP/s, XLA bf16 {peak16:.0f} GFLOP/s, torch fp32 {peak_torch:.0f} GFLOP/s;"
          " MFU below is against the best fp32 (bf16 rows: best bf16) figure")
    peak32 = max(peak32, peak_torch)
    print("| system | variant | step (s) | tokens/s | steps/s | MFU |\n|---|---|---:|---:|---:|---:|")
    flops = None
    for variant in args.jax_variants.split(","):
        r = bench_jax(variant, batch, args.steps)
        flops = flops or r["flops"]
        peak = peak16 if "bf16" in variant else peak32
        mfu = (r["flops"] or 0) / r["step_s"] / (peak * 1e9)
        print(f"| prottrans-jax | {variant} | {r['step_s']:.2f} | {tokens / r['step_s']:,.0f} | {1 / r['step_s']:.3f} | "
              f"{mfu:.0%} |", flush=True)
    if not args.skip_torch:
        r = bench_torch(batch, args.steps)
        mfu = (flops or 0) / r["step_s"] / (peak32 * 1e9)
        print(f"| HF transformers (torch {r['threads']} threads) | fp32 | {r['step_s']:.2f} | {tokens / r['step_s']:,.0f} | "
              f"{1 / r['step_s']:.3f} | {mfu:.0%} |", flush=True)
    if flops:
        print(f"# FLOPs per step (XLA cost analysis): {flops / 1e9:,.0f} GFLOP")


if __name__ == "__main__":
    main()
