"""The ``prottrans-jax`` command line: one subcommand per common job, each importing only what it needs."""

from __future__ import annotations

import argparse
import json
import sys

from prottrans_jax import compile_cache


DESCRIPTION = """\
ProtTrans-style protein language models in JAX: pretraining, HuggingFace interchange, embeddings and
downstream predictions. Run `prottrans-jax COMMAND --help` for a command's options.

typical order: validate-fasta -> train -> export-hf -> embed -> heads train -> predict
"""


def _cmd_validate_fasta(args) -> int:
    from prottrans_jax import fasta

    stats = fasta.fasta_stats(args.fasta)
    print(json.dumps(stats, indent=2))
    return 0


def _cmd_write_tokenizer(args) -> int:
    import os

    from prottrans_jax import alphabet, atomic_files

    if args.family == "prot_xlnet":
        return _write_xlnet_tokenizer(args)
    path = os.path.join(args.out, "spiece.model" if args.family == "prot_t5" else "vocab.txt")
    atomic_files.refuse_existing(path, args.overwrite, "tokenizer file")
    os.makedirs(args.out, exist_ok=True)
    with atomic_files.atomic_file(path) as tmp:
        if args.family == "prot_t5":
            alphabet.write_prot_t5_sentencepiece_model(str(tmp))
        else:
            alphabet.write_prot_bert_vocab(str(tmp))
    print(f"wrote {path}")
    return 0


def _write_xlnet_tokenizer(args) -> int:
    """ProtXLNet needs its two JSON files beside spiece.model (its unknown token is named X): all three, whole."""
    import os
    import tempfile

    from prottrans_jax import atomic_files
    from prottrans_jax.hf import tokenizer_files

    paths = [os.path.join(args.out, name) for name in tokenizer_files.XLNET_TOKENIZER_FILES]
    atomic_files.refuse_existing(paths, args.overwrite, "tokenizer file")
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out, prefix=".xlnet-tokenizer-") as tmp:
        tokenizer_files.write_xlnet_tokenizer(tmp)
        for name, path in zip(tokenizer_files.XLNET_TOKENIZER_FILES, paths):
            os.replace(os.path.join(tmp, name), path)
    print(f"wrote {', '.join(paths)}")
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
    rc = train_module.main([
        "--gin_file=runs/prot_t5_tiny.gin", f"--gin.MODEL_DIR='{args.model_dir}'",
        f"--gin.MIXTURE_OR_TASK_NAME='{args.corpus}_prot_t5_denoise'", f"--gin.TRAIN_STEPS={args.steps}",
    ])
    if rc:
        return rc
    return _quickstart_export_and_embed(args, glob)


def _quickstart_export_and_embed(args, glob: str) -> int:
    """Quickstart, part 2: HuggingFace export of the run and per-protein embeddings of the corpus."""
    import os

    hf_dir = os.path.join(args.model_dir, "hf")
    print(f"\n== export-hf: {args.model_dir} -> {hf_dir}")
    rc = main(["export-hf", "--checkpoint", args.model_dir, "--out", hf_dir, "--overwrite"])
    if rc:
        return rc
    out = os.path.join(args.model_dir, "embeddings.h5")
    print(f"\n== embed: {glob} -> {out} (per protein; a re-run skips what is done)")
    rc = main(["embed", "--model", args.model_dir, "--fasta", glob, "--out", out, "--per-protein"])
    if rc:
        return rc
    return _quickstart_predict(args)


def _quickstart_predict(args) -> int:
    """Quickstart, part 3: secondary structure of two proteins with the shipped one-hot CNN head."""
    import json
    import os

    head = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "heads", "ss_onehot_cnn")
    query = os.path.join(args.model_dir, "query.fasta")
    with open(query, "w") as f:
        f.write(">ubiquitin\nMQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG\n"
                ">insulin_B\nFVNQHLCGSHLVEALYLVCGERGFFYTPKT\n")
    out = os.path.join(args.model_dir, "prediction")
    print("\n== predict: secondary structure with the shipped head (ProtTrans' CNN on one-hot, CB513 Q3 67%)")
    rc = main(["predict", "--fasta", query, "--head", head, "--out", out, "--overwrite"])
    if rc:
        return rc
    with open(out + ".json") as f:
        for name, r in json.load(f).items():
            print(f"{name:10s} {r['sequence']}\n{'':10s} {r['dssp3']}")
    return _quickstart_generate_and_score(args, query)


def _quickstart_generate_and_score(args, query: str) -> int:
    """Quickstart, part 4: two proteins sampled from the tiny ProtT5, and the query proteins scored."""
    import os

    generated = os.path.join(args.model_dir, "generated.fasta")
    print(f"\n== generate: 2 proteins of at most 40 residues from the tiny ProtT5 -> {generated}")
    rc = main(["generate", "--model", args.model_dir, "--num", "2", "--max-length", "40", "--seed", "0",
               "--out", generated, "--overwrite", "--no-progress"])
    if rc:
        return rc
    with open(generated) as f:
        print(f.read().rstrip())
    scores = os.path.join(args.model_dir, "scores.tsv")
    print(f"\n== score: the query proteins' pseudo-log-likelihood under the tiny ProtT5 -> {scores}")
    rc = main(["score", "--model", args.model_dir, "--fasta", query, "--out", scores, "--overwrite",
               "--no-progress"])
    if rc:
        return rc
    with open(scores) as f:
        print(f.read().rstrip())
    return 0


def _cmd_train(args, extra) -> int:
    from prottrans_jax import train as train_module

    return train_module.main(extra)


def _cmd_export_hf(args) -> int:
    from prottrans_jax import model_io
    from prottrans_jax.hf import export

    model = model_io.load_model(args.checkpoint, step=args.step, config_name=args.config, family=args.family)
    out = export.export_model(model, args.out, encoder_only=args.encoder_only, dtype=args.dtype,
                              overwrite=args.overwrite)
    written = json.loads((out / export.PROVENANCE_FILE).read_text())["architecture"]
    step = f" (step {model.step})" if model.step is not None else ""
    print(f"wrote {out}: {written} ({args.dtype}) from {model.source}{step}; load it with "
          f"transformers.{written}.from_pretrained({str(out)!r})")
    if written == "T5ForConditionalGeneration" and not model.config.tie_word_embeddings:
        # transformers 5's T5Config forces tie_word_embeddings=True whatever config.json says (it reads the
        # value only to decide the output scaling), then finds two different matrices and keeps them apart.
        print("note: transformers 5 logs 'The tied weights mapping ... so we will NOT tie them' when loading "
              "this (as for Rostlab's ProtT5): expected, the separate lm_head is kept, as ProtT5 has one")
    if written.startswith("TransfoXL"):
        print("note: transformers 5 has no TransfoXL; load it with transformers 4.35 (pip install "
              "transformers==4.35.2), the last release that has it")
    return 0


def _cmd_import_hf(args) -> int:
    from prottrans_jax.hf import import_to_orbax

    model, where = import_to_orbax.import_hf_to_orbax(args.hf, args.out, family=args.family,
                                                     overwrite=args.overwrite)
    print(f"wrote {where} ({model.architecture}, {type(model.config).__name__})")
    names = import_to_orbax.matching_config_names(model.config)
    if names:
        print(f"its weights fit the named config(s) {', '.join(names)}; continue training with e.g.\n"
              f"  prottrans-jax train --gin_file=<a run gin using {names[0]}> --gin.MODEL_DIR=\"'{args.out}'\"")
    else:
        print("no named config matches it exactly; bind the run's MODEL_CONFIG to the same fields to train on")
    return 0


def _cmd_embed(args) -> int:
    from prottrans_jax import embed

    per_residue, per_protein = args.per_residue, args.per_protein or not args.per_residue
    try:
        summary = embed.embed_fasta(
            args.model, args.fasta, args.out, per_residue=per_residue, per_protein=per_protein, layer=args.layer,
            dtype=args.dtype, max_residues_per_batch=args.max_residues_per_batch,
            max_sequences_per_batch=args.max_sequences_per_batch, max_length=args.max_length,
            long_sequences=args.long_sequences, chunk_overlap=args.chunk_overlap, step=args.step,
            config_name=args.config, family=args.family, full_header_ids=args.full_header_ids,
            progress=not args.no_progress, save_every_seconds=args.save_every, overwrite=args.overwrite,
            segment_length=args.segment_length, memory_length=args.mem_len)
    except KeyboardInterrupt as e:  # Ctrl-C: what is saved and how to resume, in one line; the shell's 130
        said = e if isinstance(e, embed.EmbedInterrupted) else "interrupted before embedding began; run the same " \
            "command again to start"
        print(f"prottrans-jax embed: {said}", file=sys.stderr)
        return 130
    rate = f" at {summary.residues_per_second:,.0f} residues/s" if summary.residues else ""
    print(f"embedded {summary.embedded} sequence(s) ({summary.already_done} already done){rate} -> "
          f"{', '.join(summary.outputs.values())}")
    if summary.skipped_too_long:
        print(f"left out {len(summary.skipped_too_long)} sequence(s) longer than the maximum length "
              f"(listed in the file's skipped_too_long attribute)")
    return 0


def _cmd_predict(args) -> int:
    from prottrans_jax.downstream import predict

    paths = predict.predict_fasta(args.fasta, args.head, args.out, model=args.model, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and appends each option's default (unless None/False or already said)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        shown = "default" in text or not action.option_strings
        if shown or any(default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with our help formatter; subcommand parsers inherit it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


# model_io.FAMILIES, spelled out so that building the parser imports no model code.
MODEL_FAMILIES = ("t5", "bert", "albert", "electra", "xlnet", "transfo_xl")


def _add_model_args(p, model_flag: str) -> None:
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--config", default=None,
                   help="named model config, for checkpoints that record none (t5x's), e.g. prot_t5_xl_u50")
    p.add_argument("--family", default=None, choices=MODEL_FAMILIES, help=f"refuse a {model_flag} of another family")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="prottrans-jax", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-fasta", help="check FASTA files and print record/residue statistics",
                       description="Checks FASTA files with the rules embed and training use and prints statistics.")
    p.add_argument("fasta", help="a FASTA path or glob (plain or .gz)")
    p.set_defaults(func=_cmd_validate_fasta)

    p = sub.add_parser("write-tokenizer",
                       help="write the ProtT5 or ProtXLNet SentencePiece model or the ProtBert vocab.txt")
    p.add_argument("--family", choices=("prot_t5", "prot_bert", "prot_xlnet"), default="prot_t5",
                   help="prot_t5: spiece.model (128 ids with sentinels); prot_bert: vocab.txt (30 ids, also "
                        "ProtTXL's); prot_xlnet: spiece.model, tokenizer_config.json, special_tokens_map.json (37 ids)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace a tokenizer file already in --out")
    p.set_defaults(func=_cmd_write_tokenizer)

    p = sub.add_parser("preview", help="print decoded examples of a registered SeqIO task")
    p.add_argument("--task", required=True, help="e.g. demo_prot_t5_denoise, uniref50_bert_mlm")
    p.add_argument("--num", type=int, default=3, help="examples to print")
    p.add_argument("--length", type=int, default=64, help="feature length (inputs and targets)")
    p.add_argument("--seed", type=int, default=0, help="task seed (masking and cropping)")
    p.add_argument("--split", default="train", choices=("train", "validation"), help="the corpus split to read")
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("quickstart", help="run the end-to-end demo on the shipped corpus")
    p.add_argument("--corpus", default="demo", help="registered corpus (demo: the shipped synthetic one)")
    p.add_argument("--num", type=int, default=2, help="examples shown per objective")
    p.add_argument("--length", type=int, default=48, help="feature length of the examples shown")
    p.add_argument("--steps", type=int, default=60, help="pretraining steps of the tiny ProtT5")
    p.add_argument("--model-dir", default="quickstart_run",
                   help="where everything goes: checkpoints, TensorBoard events, hf/, embeddings.h5, prediction.*")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("export-hf", help="write a checkpoint as a HuggingFace (PyTorch) folder")
    p.add_argument("--checkpoint", required=True, help="training directory (ours or t5x), checkpoint_N folder, "
                                                       "or HF folder")
    p.add_argument("--out", required=True, help="folder to write (config.json, model.safetensors, tokenizer)")
    p.add_argument("--encoder-only", action="store_true", help="only the encoder (T5EncoderModel, BertModel, ...)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="dtype of the written weights")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    _add_model_args(p, "checkpoint")
    p.set_defaults(func=_cmd_export_hf)

    p = sub.add_parser("import-hf", help="write a HuggingFace model as an Orbax checkpoint our trainer starts from")
    p.add_argument("--hf", required=True, help="HF folder (config.json + model.safetensors or pytorch_model.bin)")
    p.add_argument("--out", required=True, help="new training directory (MODEL_DIR)")
    p.add_argument("--family", default=None, choices=MODEL_FAMILIES, help="refuse a folder of another family")
    p.add_argument("--overwrite", action="store_true", help="replace checkpoints already in --out")
    p.set_defaults(func=_cmd_import_hf)

    p = sub.add_parser("embed", help="FASTA -> HDF5 embeddings (ProtTrans layout), resumable")
    p.add_argument("--model", required=True, help="training directory, checkpoint_N folder or HF folder")
    p.add_argument("--fasta", required=True, help="FASTA path or glob (plain or .gz)")
    p.add_argument("--out", required=True, help="output .h5 (both kinds: per-protein to <stem>.per_protein.h5)")
    p.add_argument("--per-residue", action="store_true", help="write (L, hidden) per sequence")
    p.add_argument("--per-protein", action="store_true", help="write the mean over residues (default)")
    p.add_argument("--layer", type=int, default=None,
                   help="hidden state: 0 embeddings ... N final output (default), negative counts back")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="compute dtype (half precision is stored as float16)")
    p.add_argument("--max-residues-per-batch", type=int, default=4000, help="padded tokens per batch")
    p.add_argument("--max-sequences-per-batch", type=int, default=100, help="sequences per batch at most")
    p.add_argument("--max-length", type=int, default=None,
                   help="longest sequence embedded whole (default: what 80%% of the free memory holds; "
                        "$PROTTRANS_JAX_AVAILABLE_MEMORY_BYTES, if set, is taken as the free memory)")
    p.add_argument("--long-sequences", default="error", choices=("error", "skip", "chunk"),
                   help="longer sequences: error (refuse the run before any work), skip (leave them out), or chunk "
                        "(embed overlapping windows and join them)")
    p.add_argument("--chunk-overlap", type=int, default=256, help="residues shared by neighbouring windows")
    p.add_argument("--segment-length", type=int, default=None,
                   help="ProtXLNet/ProtTXL only: tokens per segment (None: 512). A longer protein is not refused: it "
                        "runs as consecutive segments, each attending to itself and to a memory of the --mem-len "
                        "tokens before it, so past one segment a residue sees only that many earlier tokens")
    p.add_argument("--mem-len", type=int, default=None,
                   help="ProtXLNet/ProtTXL only: memory tokens carried from segment to segment (None: the model's "
                        "mem_len, else 512 as ProtTrans' ProtXLNet notebooks)")
    p.add_argument("--full-header-ids", action="store_true",
                   help="name datasets by the whole header line (as ProtTrans' script) instead of its first word")
    p.add_argument("--save-every", type=float, default=30.0,
                   help="seconds between writes of finished sequences (the most work a kill loses)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="start over: the existing --out (and its .parts) is replaced once the first new embeddings "
                        "are written; without it a re-run resumes, and an output of another model, setting or "
                        "sequence is refused")
    _add_model_args(p, "model")
    compile_cache.add_arguments(p)
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("predict", help="secondary structure, location and membrane for a FASTA (TSV + JSON)")
    p.add_argument("--fasta", required=True, help="FASTA path or glob (plain or .gz)")
    p.add_argument("--head", required=True, action="append", help="a heads train folder (repeat for several)")
    p.add_argument("--model", default=None, help="the embedding model the heads were trained on (not for onehot)")
    p.add_argument("--out", required=True, help="output prefix: <out>.residues.tsv, <out>.proteins.tsv, <out>.json")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run")
    compile_cache.add_arguments(p)
    p.set_defaults(func=_cmd_predict)

    from prottrans_jax.downstream import finetune_cli, heads_cli

    heads_cli.add_parser(sub)
    finetune_cli.add_parser(sub)
    from prottrans_jax.generation import cli_args as generation_cli

    generation_cli.add_parsers(sub)

    p = sub.add_parser(
        "train", help="pretrain with gin files (same flags as python -m prottrans_jax.train; --help lists them)",
        add_help=False,  # --help goes to the trainer's own usage text
    )
    p.set_defaults(func=_cmd_train, passthrough=True)
    return parser


def main(argv=None) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    if "jax" not in sys.modules:  # XLA reads its flags once, when the backend starts
        from prottrans_jax.train import default_cpu_xla_flags

        os.environ["XLA_FLAGS"] = default_cpu_xla_flags()
    args, extra = build_parser().parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    from prottrans_jax import native_logs

    with native_logs.quiet_native_startup():
        try:
            compile_cache.configure(args)
            return args.func(args, extra) if getattr(args, "passthrough", False) else args.func(args)
        except (ValueError, FileNotFoundError, OSError) as e:
            # User-caused errors (bad FASTA, missing path, unknown task) get one clear line, no traceback.
            print(f"prottrans-jax {args.command}: error: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
