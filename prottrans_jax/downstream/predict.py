"""``prottrans-jax predict``: FASTA -> per-residue secondary structure and per-protein location/membrane, as TSV and JSON."""

from __future__ import annotations

import json
import pathlib
from typing import Optional, Sequence

import numpy as np

from prottrans_jax import atomic_files, fasta
from prottrans_jax.downstream import datasets, inputs, provenance
from prottrans_jax.models.heads import takes_residues


def output_paths(out_prefix: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """The three files ``predict`` may write: ``<out>.json``, ``<out>.residues.tsv``, ``<out>.proteins.tsv``."""
    prefix = pathlib.Path(out_prefix)
    return {kind: prefix.with_name(prefix.name + suffix)
            for kind, suffix in (("json", ".json"), ("residues", ".residues.tsv"), ("proteins", ".proteins.tsv"))}


def _check_heads(heads: dict, model: Optional[str]) -> None:
    """Refuses ``--model`` for heads that use none, and heads trained on different models' embeddings."""
    used = {d: p for d, (_, _, _, p) in heads.items() if provenance.uses_language_model(p)}
    if model is not None and not used:
        head_dir, (_, _, _, prov) = next(iter(heads.items()))
        raise ValueError(f"{head_dir}: the head does not use a language model (it was trained on "
                         f"{provenance.describe(prov)}); drop --model {model}")
    fingerprints = {d: p["model_fingerprint"] for d, p in used.items() if p.get("model_fingerprint")}
    for (a, fa), (b, fb) in zip(fingerprints.items(), list(fingerprints.items())[1:]):
        if fa != fb:
            raise ValueError(f"{a} and {b} were trained on different models' embeddings ({provenance.describe(used[a])}"
                             f" vs {provenance.describe(used[b])}); predict embeds with one model: run it once per "
                             "model")


def _model_features(heads: dict, model: str, seqs) -> dict[str, list]:
    """Features of ``--model`` for every head that uses a language model, each head checked before any embedding."""
    from prottrans_jax import model_io
    from prottrans_jax.downstream import encodings

    loaded = model_io.load_model(model)
    wanted = {}
    for head_dir, (head, _, _, prov) in heads.items():
        if provenance.uses_language_model(prov):
            actual = provenance.features_provenance(f"model:{model}", loaded, per_residue=takes_residues(head),
                                                    layer=prov.get("layer"))
            provenance.check_compatible(head_dir, prov, actual)
            wanted[head_dir] = (takes_residues(head), actual["layer"])
    cache = {key: encodings.model_features(loaded, seqs, per_residue=key[0], layer=key[1])
             for key in set(wanted.values())}
    return {head_dir: cache[key] for head_dir, key in wanted.items()}


def _own_features(head_dir, head, info, prov, ids, seqs) -> list:
    """Features of a head's own ``--features`` (an encoding, or the embed file it was trained on)."""
    from prottrans_jax.downstream import heads_cli

    kind, _ = inputs.parse_spec(info["features"])
    if kind == "model":
        raise ValueError(f"{head_dir}: the head was trained on language-model embeddings ({info['features']}); "
                         "pass --model")
    try:
        return heads_cli.checked_features(info["features"], ids, seqs, takes_residues(head), head_dir, prov)[0]
    except ValueError as e:
        if kind != "h5":
            raise
        raise ValueError(f"{e}; or pass --model (the model that wrote {info['features']}) to embed these "
                         "sequences") from None


def predict_fasta(fasta_paths, head_dirs: Sequence[str], out_prefix: str | pathlib.Path,
                  model: Optional[str] = None, overwrite: bool = False) -> dict[str, pathlib.Path]:
    """Runs every head on every sequence and writes ``<out>.residues.tsv``, ``<out>.proteins.tsv``, ``<out>.json``.

    Args:
      fasta_paths: FASTA input.
      head_dirs: ``heads train`` folders (a secondary-structure and/or a localization head).
      out_prefix: output path prefix.
      model: the embedding model the heads were trained on (not for one-hot/BLOSUM heads, which refuse it).
      overwrite: replace earlier outputs (else they are refused before any work).

    Raises:
      FileExistsError: an output exists and ``overwrite`` is False.
      ValueError: a head given features other than those it was trained on (see :mod:`provenance`).
    """
    from prottrans_jax.downstream import heads_cli, protein_training, residue_training

    paths = output_paths(out_prefix)
    atomic_files.refuse_existing(paths.values(), overwrite, "prediction")
    heads = {}
    for head_dir in head_dirs:
        head, variables, info = heads_cli.load_trained(head_dir)
        heads[head_dir] = (head, variables, info, provenance.of_head(info))
    _check_heads(heads, model)
    records = list(fasta.validated_records(fasta_paths))
    ids, seqs = [r.id for r in records], [r.sequence for r in records]
    from_model = _model_features(heads, model, seqs) if model is not None else {}
    results: dict[str, dict] = {rid: {"sequence": s} for rid, s in zip(ids, seqs)}
    for head_dir, (head, variables, info, prov) in heads.items():
        feats = from_model.get(head_dir) or _own_features(head_dir, head, info, prov, ids, seqs)
        if info["task"] == "secondary-structure":
            probs = residue_training.predict_residue_head(variables, head, feats, [len(s) for s in seqs])
            for rid, p in zip(ids, probs):
                results[rid].update(
                    dssp3="".join(datasets.DSSP3[i] for i in p["dssp3"].argmax(-1)),
                    dssp8="".join(datasets.DSSP8[i] for i in p["dssp8"].argmax(-1)),
                    dssp3_probabilities=np.round(p["dssp3"], 4).tolist(),
                    dssp8_probabilities=np.round(p["dssp8"], 4).tolist(),
                    disorder_probability=np.round(p["disorder"][:, 0], 4).tolist())
        else:
            probs = protein_training.predict_protein_head(variables, head, feats)
            for j, rid in enumerate(ids):
                loc, mem = probs["location"][j], probs["membrane"][j]
                results[rid].update(
                    location=datasets.LOCATIONS[int(loc.argmax())],
                    location_probabilities={n: round(float(x), 4) for n, x in zip(datasets.LOCATIONS, loc)},
                    membrane="membrane" if mem[1] > mem[0] else "soluble", membrane_probability=round(float(mem[1]), 4))
    written = _write(results, paths)
    for kind, path in paths.items():  # with --overwrite, no output of an earlier run with other heads survives
        if kind not in written and path.exists():
            path.unlink()
    return written


def _write(results: dict, all_paths: dict[str, pathlib.Path]) -> dict[str, pathlib.Path]:
    paths = {"json": all_paths["json"]}
    with atomic_files.atomic_file(paths["json"]) as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    first = next(iter(results.values()))
    if "dssp3" in first:
        paths["residues"] = all_paths["residues"]
        with atomic_files.atomic_file(paths["residues"]) as tmp, open(tmp, "w") as f:
            f.write("id\tposition\tresidue\tdssp3\t" + "\t".join(f"p_{c}3" for c in datasets.DSSP3) + "\tdssp8\t"
                    + "\t".join(f"p_{c}8" for c in datasets.DSSP8) + "\tp_disorder\n")
            for rid, r in results.items():
                for i, aa in enumerate(r["sequence"]):
                    p3 = "\t".join(f"{x:.4f}" for x in r["dssp3_probabilities"][i])
                    p8 = "\t".join(f"{x:.4f}" for x in r["dssp8_probabilities"][i])
                    f.write(f"{rid}\t{i + 1}\t{aa}\t{r['dssp3'][i]}\t{p3}\t{r['dssp8'][i]}\t{p8}\t"
                            f"{r['disorder_probability'][i]:.4f}\n")
    if "location" in first:
        paths["proteins"] = all_paths["proteins"]
        with atomic_files.atomic_file(paths["proteins"]) as tmp, open(tmp, "w") as f:
            f.write("id\tlength\tlocation\t" + "\t".join(f"p_{n}" for n in datasets.LOCATIONS)
                    + "\tmembrane\tp_membrane\n")
            for rid, r in results.items():
                probs = "\t".join(f"{r['location_probabilities'][n]:.4f}" for n in datasets.LOCATIONS)
                f.write(f"{rid}\t{len(r['sequence'])}\t{r['location']}\t{probs}\t{r['membrane']}\t"
                        f"{r['membrane_probability']:.4f}\n")
    return paths
