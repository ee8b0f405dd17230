"""``prottrans-jax predict``: FASTA -> per-residue secondary structure and per-protein location/membrane, as TSV and JSON."""

from __future__ import annotations

import json
import pathlib
from typing import Optional, Sequence

import numpy as np

from prottrans_jax import atomic_files, fasta
from prottrans_jax.downstream import datasets, inputs
from prottrans_jax.models.heads import takes_residues


def _features(spec: str, model, ids, seqs, per_residue: bool, cache: dict):
    """Features for a head trained on ``spec``; a language model's come from ``model`` (embedded once)."""
    kind, _ = inputs.parse_spec(spec)
    if kind == "model" or (kind == "h5" and model is not None):
        if model is None:
            raise ValueError(f"the head was trained on language-model embeddings ({spec}); pass --model")
        if ("model", per_residue) not in cache:
            from prottrans_jax.downstream import encodings

            cache[("model", per_residue)] = encodings.model_features(model, seqs, per_residue=per_residue)
        return cache[("model", per_residue)]
    try:
        return inputs.features_for(spec, ids, seqs, per_residue)
    except ValueError as e:
        if kind != "h5":
            raise
        raise ValueError(f"{e}; or pass --model (the model that wrote {spec}) to embed these sequences") from None


def predict_fasta(fasta_paths, head_dirs: Sequence[str], out_prefix: str | pathlib.Path,
                  model: Optional[str] = None) -> dict[str, pathlib.Path]:
    """Runs every head on every sequence and writes ``<out>.residues.tsv``, ``<out>.proteins.tsv``, ``<out>.json``.

    Args:
      fasta_paths: FASTA input.
      head_dirs: ``heads train`` folders (a secondary-structure and/or a localization head).
      out_prefix: output path prefix.
      model: the embedding model the heads were trained on (not needed for one-hot/BLOSUM heads).
    """
    from prottrans_jax.downstream import heads_cli, protein_training, residue_training

    records = list(fasta.read_fasta(fasta_paths, check_unique_ids=True))
    if not records:
        raise ValueError(f"{fasta_paths}: no sequences")
    ids, seqs = [r.id for r in records], [r.sequence for r in records]
    results: dict[str, dict] = {rid: {"sequence": s} for rid, s in zip(ids, seqs)}
    cache: dict = {}
    for head_dir in head_dirs:
        head, variables, info = heads_cli.load_trained(head_dir)
        if info["task"] == "secondary-structure":
            feats = _features(info["features"], model, ids, seqs, True, cache)
            probs = residue_training.predict_residue_head(variables, head, feats, [len(s) for s in seqs])
            for rid, p in zip(ids, probs):
                results[rid].update(
                    dssp3="".join(datasets.DSSP3[i] for i in p["dssp3"].argmax(-1)),
                    dssp8="".join(datasets.DSSP8[i] for i in p["dssp8"].argmax(-1)),
                    dssp3_probabilities=np.round(p["dssp3"], 4).tolist(),
                    dssp8_probabilities=np.round(p["dssp8"], 4).tolist(),
                    disorder_probability=np.round(p["disorder"][:, 0], 4).tolist())
        else:
            per_residue = takes_residues(head)
            feats = _features(info["features"], model, ids, seqs, per_residue, cache)
            probs = protein_training.predict_protein_head(variables, head, feats)
            for j, rid in enumerate(ids):
                loc, mem = probs["location"][j], probs["membrane"][j]
                results[rid].update(
                    location=datasets.LOCATIONS[int(loc.argmax())],
                    location_probabilities={n: round(float(x), 4) for n, x in zip(datasets.LOCATIONS, loc)},
                    membrane="membrane" if mem[1] > mem[0] else "soluble", membrane_probability=round(float(mem[1]), 4))
    return _write(results, pathlib.Path(out_prefix))


def _write(results: dict, prefix: pathlib.Path) -> dict[str, pathlib.Path]:
    paths = {"json": prefix.with_name(prefix.name + ".json")}
    with atomic_files.atomic_file(paths["json"]) as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    first = next(iter(results.values()))
    if "dssp3" in first:
        paths["residues"] = prefix.with_name(prefix.name + ".residues.tsv")
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
        paths["proteins"] = prefix.with_name(prefix.name + ".proteins.tsv")
        with atomic_files.atomic_file(paths["proteins"]) as tmp, open(tmp, "w") as f:
            f.write("id\tlength\tlocation\t" + "\t".join(f"p_{n}" for n in datasets.LOCATIONS)
                    + "\tmembrane\tp_membrane\n")
            for rid, r in results.items():
                probs = "\t".join(f"{r['location_probabilities'][n]:.4f}" for n in datasets.LOCATIONS)
                f.write(f"{rid}\t{len(r['sequence'])}\t{r['location']}\t{probs}\t{r['membrane']}\t"
                        f"{r['membrane_probability']:.4f}\n")
    return paths
