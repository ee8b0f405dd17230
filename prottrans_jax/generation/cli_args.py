"""The ``generate`` and ``score`` subcommands of ``prottrans-jax`` (parsers and handlers)."""

from __future__ import annotations

from prottrans_jax import compile_cache

GENERATE_DESCRIPTION = """\
Samples proteins from ProtTXL, ProtXLNet or ProtT5's decoder with cached incremental decoding (the prefix is
computed once, then one token per step). Only the 20 standard residues and the end token are drawn. Each
FASTA header holds the length, the model's log-likelihood of the sampled tokens after the prompt (at
temperature 1 over the full vocabulary, the end token included when drawn: what `score` reports for the
whole protein when there is no prompt), why it stopped (end or max_length) and the model.
ProtT5: the encoder reads the prompt, one <extra_id_0> sentinel per residue still to come (up to
--max-length) and </s>, as in ProtT5's denoising pretraining; the decoder starts with the prompt.
The same --seed and --batch-size give the same proteins.
"""

SCORE_DESCRIPTION = """\
Writes a TSV with one row per protein and the columns
  id  length  log_likelihood  mean_log_likelihood  perplexity  scored_tokens  method
method: causal (ProtTXL: residues and [SEP] after [CLS], memory across segments), permutation (ProtXLNet:
the left-to-right factorisation order via perm_mask, after <sep> <cls>, residues and the closing <sep>:
an exact likelihood), mlm_pseudo (ProtBert/ProtAlbert/ProtElectra's generator: each residue masked in
turn) or t5_denoising (ProtT5: each residue replaced by <extra_id_0> in turn and scored from the decoder's
reconstruction). The last two are pseudo-log-likelihoods. mean_log_likelihood = log_likelihood /
scored_tokens (residues, plus the end token for causal and permutation); perplexity = exp(-mean).
"""


def cmd_generate(args) -> int:
    from prottrans_jax.generation import generate, sampling

    settings = sampling.SamplingSettings(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    proteins = generate.generate_fasta(
        args.model, args.out, num=args.num, max_length=args.max_length, seed=args.seed, prompt=args.prompt,
        settings=settings, batch_size=args.batch_size, step=args.step, overwrite=args.overwrite,
        progress=not args.no_progress)
    ended = sum(p.ended for p in proteins)
    print(f"wrote {len(proteins)} protein(s) to {args.out} ({ended} ended with the end token, "
          f"{len(proteins) - ended} stopped at --max-length {args.max_length})")
    return 0


def cmd_score(args) -> int:
    from prottrans_jax.generation import scoring

    scores = scoring.score_fasta(args.model, args.fasta, args.out, batch_size=args.batch_size,
                                 segment_length=args.segment_length, step=args.step, overwrite=args.overwrite,
                                 progress=not args.no_progress)
    mean = sum(s.mean_log_likelihood for s in scores) / len(scores)
    print(f"scored {len(scores)} protein(s) ({scores[0].method}; mean per-token log-likelihood {mean:.4f}) "
          f"-> {args.out}")
    return 0


def _common(p, what: str) -> None:
    p.add_argument("--model", required=True, help="training directory, checkpoint_N folder or HF folder")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--out", required=True, help=f"output {what} (refused if it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help=f"replace an existing --out {what}")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    compile_cache.add_arguments(p)


def add_parsers(sub) -> None:
    """Registers ``generate`` and ``score`` on the main parser's subparsers."""
    p = sub.add_parser("generate", help="sample proteins from ProtTXL, ProtXLNet or ProtT5 (FASTA)",
                       description=GENERATE_DESCRIPTION)
    p.add_argument("--num", type=int, required=True, help="proteins to sample")
    p.add_argument("--max-length", type=int, required=True, help="most residues per protein, the prompt included")
    p.add_argument("--prompt", default="", help="residues every protein starts with (default: none)")
    p.add_argument("--temperature", type=float, default=1.0, help="divides the logits (> 0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="sample among the most likely tokens whose probability reaches p (1: all)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="CTRL's penalty on residues already in the protein (1: none; > 1 discourages repeats)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--batch-size", type=int, default=8, help="proteins sampled together")
    _common(p, "FASTA")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("score", help="log-likelihood and perplexity of each protein in a FASTA (TSV)",
                       description=SCORE_DESCRIPTION)
    p.add_argument("--fasta", required=True, help="FASTA path or glob (plain or .gz)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="proteins per forward pass (causal, permutation) or masked copies per pass (pseudo)")
    p.add_argument("--segment-length", type=int, default=None,
                   help="ProtTXL: tokens per segment, memory carries the rest (default: the model's mem_len)")
    _common(p, "TSV")
    p.set_defaults(func=cmd_score)
