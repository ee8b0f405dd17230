"""Runs inside the transformers 4.35 environment (tests/transformers435.py): TransfoXL reference outputs.

Usage: ``python txl435_reference.py WORK_DIR``. Reads ``request.json`` and ``inputs.npz`` there, writes
``reference.npz`` (per model and case: log-probs, every hidden state and the memory of two consecutive
segments) and ``reference.json`` (versions, loading info, tokenizer ids, TransfoXLConfig's defaults).

request.json: ``exported`` (a folder our export-hf wrote), ``cases`` (name -> from_pretrained overrides:
mem_len, clamp_len, same_length), ``native`` (name -> {dir, seed, untie_r, safe_serialization}: random
4.35 models to create, perturb and save), ``tiny`` (their sizes), ``texts`` (space-separated proteins),
``default_keys`` (TransfoXLConfig fields whose defaults to report).
"""

import json
import pathlib
import sys

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, TransfoXLConfig, TransfoXLLMHeadModel


def two_segments(model, first, second):
    """The first segment starts from an empty memory (as Transformer-XL's own code), the second reads its memory."""
    config = model.config
    mems = [torch.zeros(0, first.shape[0], config.d_model) for _ in range(config.n_layer)]
    out = {}
    for seg, ids in (("1", first), ("2", second)):
        with torch.no_grad():
            o = model(input_ids=torch.tensor(ids, dtype=torch.long), mems=mems, output_hidden_states=True)
        mems = o.mems
        out[f"{seg}.scores"] = o.prediction_scores.numpy()
        out[f"{seg}.hidden"] = np.stack([h.numpy() for h in o.hidden_states])  # [layers + 1, batch, length, embed]
        out[f"{seg}.mems"] = np.stack([m.numpy().transpose(1, 0, 2) for m in o.mems], axis=1)  # [b, layers, m, e]
    with torch.no_grad():  # 4.35's own start (mems=None): mem_len zero vectors that every query attends to
        out["1.scores_mems_none"] = model(input_ids=torch.tensor(first, dtype=torch.long)).prediction_scores.numpy()
    return out


def native_model(spec, tiny):
    """A random 4.35 model in our layout (one cluster, no projections), every parameter perturbed."""
    torch.manual_seed(spec["seed"])
    config = TransfoXLConfig(**tiny, d_embed=tiny["d_model"], cutoffs=[], div_val=1, proj_share_all_but_first=False,
                             untie_r=spec["untie_r"])
    model = TransfoXLLMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # biases and norms leave 0/1, so a misplaced one shows
    return model


def main(work: pathlib.Path) -> None:
    request = json.loads((work / "request.json").read_text())
    inputs = np.load(work / "inputs.npz")
    first, second = inputs["first"], inputs["second"]
    arrays, report = {}, {"versions": {"transformers": transformers.__version__, "torch": torch.__version__},
                          "loading": {}}
    for case, overrides in request["cases"].items():
        model, info = TransfoXLLMHeadModel.from_pretrained(request["exported"], output_loading_info=True, **overrides)
        report["loading"][case] = {k: info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        arrays.update({f"exported.{case}.{k}": v for k, v in two_segments(model.eval(), first, second).items()})
    tokenizer = AutoTokenizer.from_pretrained(request["exported"])
    report["tokenizer"] = type(tokenizer).__name__
    report["token_ids"] = tokenizer(request["texts"])["input_ids"]
    for name, spec in request["native"].items():
        model = native_model(spec, request["tiny"])
        model.save_pretrained(spec["dir"], safe_serialization=spec["safe_serialization"])
        arrays.update({f"native.{name}.{k}": v for k, v in two_segments(model, first, second).items()})
    defaults = TransfoXLConfig()
    report["defaults"] = {k: getattr(defaults, k) for k in request["default_keys"]}
    np.savez(work / "reference.npz", **arrays)
    (work / "reference.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
