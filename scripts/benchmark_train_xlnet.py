"""Training-step throughput of XLNet's permutation LM: our JAX trainer vs transformers' XLNetLMHeadModel on torch.

Both train the same network (default: 4 layers, d_model 256, 4 heads of 64, d_inner 1024, GELU,
ProtXLNet's 37 ids, dropout 0.1, no memory) on the same batch: windows of real proteins from the
``xlnet_plm`` pipeline (``perm_mask``, ``target_mapping``, right padding with ``attention_mask``),
with AdamW (lr 1e-4, weight decay 0.01) behind gradient clipping at norm 1. Tokens/s counts window
tokens (batch x length) per optimizer step; the step time is the median over ``--steps`` after one
warm-up step (our first step also compiles).

Usage: python scripts/benchmark_train_xlnet.py [--steps 10] [--batch 8] [--length 128] [--layers 4] [--width 256]
"""

import argparse
import datetime
import os
import platform
import time

import numpy as np

LR, WEIGHT_DECAY, CLIP = 1e-4, 0.01, 1.0


def real_batch(fasta: str, batch: int, length: int) -> dict:
    """One batch of the xlnet_plm pipeline over ``fasta`` (the first proteins, seed 0)."""
    import prottrans_jax_tasks
    from prottrans_jax import permutation_lm_data, pipeline

    prottrans_jax_tasks.register_fasta_tasks("bench", fasta, validation_fraction=0.0, objectives=("xlnet_plm",))
    ds = pipeline.get_dataset("bench_xlnet_plm", batch_size=batch, seed=0, shuffle=False,
                              feature_lengths=permutation_lm_data.feature_lengths(length))
    return next(pipeline.numpy_batches(ds))


def _median_step_s(step, steps: int) -> tuple[float, float]:
    """(median seconds per call of ``step() -> loss`` after one warm-up call, last loss)."""
    loss = step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), loss


def bench_jax(args, batch_np: dict) -> dict:
    """Our trainer's step on one device."""
    import jax

    from prottrans_jax import model_adapters, objectives, optimizers, partitioning, trainer as trainer_lib
    from prottrans_jax.models import configs

    config = configs.get_config("prot_xlnet", n_layer=args.layers, d_model=args.width, n_head=args.width // 64,
                                d_inner=4 * args.width, dropout=0.1)
    lengths = {"inputs": args.length, "targets": batch_np["target_tokens"].shape[1]}
    module, logits_fn, init_inputs = model_adapters.adapt(config, "xlnet_plm", lengths)
    schedule = optimizers.make_schedule("constant", LR)
    trainer = trainer_lib.Trainer(
        module=module, logits_fn=logits_fn, objective=objectives.OBJECTIVE_FOR_TASK["xlnet_plm"](),
        optimizer=optimizers.make_optimizer("adamw", schedule, weight_decay=WEIGHT_DECAY, clip_norm=CLIP, eps=1e-6),
        mesh=partitioning.make_mesh({"data": 1}, jax.devices()[:1]), rules="data", init_inputs=init_inputs,
    )
    holder = {"state": trainer.init_state(0)}
    batch = {k: jax.device_put(v, trainer.batch_sharding(v.ndim)) for k, v in batch_np.items()}

    def step():
        holder["state"], metrics = trainer.train_step(holder["state"], batch)
        return float(jax.block_until_ready(metrics["loss"]))

    step_s, loss = _median_step_s(step, args.steps)
    return {"step_s": step_s, "loss": loss}


def bench_torch(args, batch_np: dict) -> dict:
    """transformers' XLNetLMHeadModel with the same config, batch and optimizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.XLNetConfig(vocab_size=37, d_model=args.width, n_layer=args.layers, n_head=args.width // 64,
                                   d_inner=4 * args.width, ff_activation="gelu", attn_type="bi", dropout=0.1,
                                   mem_len=None, pad_token_id=5, use_mems_train=False)
    model = transformers.XLNetLMHeadModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, eps=1e-6)
    labels = np.where(batch_np["target_weights"] > 0, batch_np["target_tokens"], -100)  # padded rows ignored
    inputs = dict(
        input_ids=torch.tensor(batch_np["encoder_input_tokens"], dtype=torch.long),
        attention_mask=torch.tensor(batch_np["attention_mask"], dtype=torch.float32),
        perm_mask=torch.tensor(batch_np["perm_mask"], dtype=torch.float32),
        target_mapping=torch.tensor(batch_np["target_mapping"], dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.long),
    )

    def step():
        loss = model(**inputs, use_mems=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad()
        return float(loss.detach())

    step_s, loss = _median_step_s(step, args.steps)
    return {"step_s": step_s, "loss": loss, "threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=8, help="windows per step")
    parser.add_argument("--length", type=int, default=128, help="window length (<sep> <cls> included)")
    parser.add_argument("--layers", type=int, default=4, help="XLNet layers")
    parser.add_argument("--width", type=int, default=256, help="d_model (heads of 64, d_inner 4x)")
    parser.add_argument("--fasta", default=None, help="proteins for the batch (default: the real demo corpus in "
                        "../shared/data/pretrain/demo_corpus.fasta.gz)")
    parser.add_argument("--skip-torch", action="store_true", help="time our trainer only")
    args = parser.parse_args()
    from prottrans_jax.train import default_cpu_xla_flags

    os.environ["XLA_FLAGS"] = default_cpu_xla_flags()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fasta = args.fasta or os.path.join(os.path.dirname(repo), "shared", "data", "pretrain", "demo_corpus.fasta.gz")
    batch = real_batch(fasta, args.batch, args.length)
    tokens = args.batch * args.length
    print(f"# {datetime.date.today()} {platform.node()} {platform.machine()} cores={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.2f} XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
    print(f"# XLNet {args.layers} layers, width {args.width}, batch {args.batch} x {args.length}, "
          f"{batch['target_weights'].sum()} targets, AdamW")
    print("| system | step (s) | tokens/s | loss after the timed steps |\n|---|---:|---:|---:|")
    r = bench_jax(args, batch)
    print(f"| prottrans-jax (JAX, fp32) | {r['step_s']:.3f} | {tokens / r['step_s']:,.0f} | {r['loss']:.3f} |", flush=True)
    if not args.skip_torch:
        r = bench_torch(args, batch)
        print(f"| transformers XLNetLMHeadModel (torch, {r['threads']} threads, fp32) | {r['step_s']:.3f} | "
              f"{tokens / r['step_s']:,.0f} | {r['loss']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
