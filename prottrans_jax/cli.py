"""The ``prottrans-jax`` command line: one subcommand per common job, each importing only what it needs."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_validate_fasta(args) -> int:
    from prottrans_jax import fasta

    stats = fasta.fasta_stats(args.fasta)
    print(json.dumps(stats, indent=2))
    return 0


def _cmd_write_tokenizer(args) -> int:
    import os

    from prottrans_jax import alphabet

    os.makedirs(args.out, exist_ok=True)
    if args.family == "prot_t5":
        path = alphabet.write_prot_t5_sentencepiece_model(os.path.join(args.out, "spiece.model"))
    else:
        path = alphabet.write_prot_bert_vocab(os.path.join(args.out, "vocab.txt"))
    print(f"wrote {path}")
    return 0


def _cmd_preview(args) -> int:
    from prottrans_jax import pipeline

    for line in pipeline.preview_lines(args.task, args.num, args.length, args.seed, args.split):
        print(line)
    return 0


def _cmd_quickstart(args) -> int:
    """The README's main job; it grows as capabilities land (data pipeline, then a tiny pretraining run)."""
    from prottrans_jax import fasta, pipeline
    from prottrans_jax import train as train_module
    from prottrans_jax_tasks import OBJECTIVES, corpus_glob

    glob = corpus_glob(args.corpus)
    print(f"== corpus {args.corpus!r}: {glob}")
    print(json.dumps(fasta.fasta_stats(glob), indent=2))
    for objective in OBJECTIVES:
        task = f"{args.corpus}_{objective}"
        print(f"\n== {task}: {args.num} examples at length {args.length}")
        for line in pipeline.preview_lines(task, args.num, args.length, seed=0):
            print(line)
    print(f"\n== tiny ProtT5 pretraining ({args.steps} steps) into {args.model_dir}")
    return train_module.main([
        "--gin_file=runs/prot_t5_tiny.gin", f"--gin.MODEL_DIR='{args.model_dir}'",
        f"--gin.MIXTURE_OR_TASK_NAME='{args.corpus}_prot_t5_denoise'", f"--gin.TRAIN_STEPS={args.steps}",
    ])


def _cmd_train(args, extra) -> int:
    from prottrans_jax import train as train_module

    return train_module.main(extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prottrans-jax", description="ProtTrans-style protein language models in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-fasta", help="check FASTA files and print record/residue statistics")
    p.add_argument("fasta", help="a FASTA path or glob (plain or .gz)")
    p.set_defaults(func=_cmd_validate_fasta)

    p = sub.add_parser("write-tokenizer", help="write the ProtT5 SentencePiece model or the ProtBert vocab.txt")
    p.add_argument("--family", choices=("prot_t5", "prot_bert"), default="prot_t5")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_write_tokenizer)

    p = sub.add_parser("preview", help="print decoded examples of a registered SeqIO task")
    p.add_argument("--task", required=True, help="e.g. demo_prot_t5_denoise, uniref50_bert_mlm")
    p.add_argument("--num", type=int, default=3)
    p.add_argument("--length", type=int, default=64, help="feature length (inputs and targets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=("train", "validation"))
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("quickstart", help="run the end-to-end demo on the shipped corpus")
    p.add_argument("--corpus", default="demo")
    p.add_argument("--num", type=int, default=2)
    p.add_argument("--length", type=int, default=48)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--model-dir", default="quickstart_run", help="checkpoints and TensorBoard events")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser(
        "train", help="pretrain with gin files (same flags as python -m prottrans_jax.train)",
        description="e.g. prottrans-jax train --gin_file=runs/prot_t5_tiny.gin --gin.MODEL_DIR=\"'runs/tiny'\"",
    )
    p.set_defaults(func=_cmd_train, passthrough=True)
    return parser


def main(argv=None) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    args, extra = build_parser().parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra) if getattr(args, "passthrough", False) else args.func(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        # User-caused errors (bad FASTA, missing path, unknown task) get one clear line, no traceback.
        print(f"prottrans-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
