"""``export-hf``: any model we can load -> a HuggingFace folder (config.json, model.safetensors, tokenizer files)."""

from __future__ import annotations

import datetime
import json
import pathlib

from prottrans_jax import alphabet, atomic_files, xlnet_alphabet
from prottrans_jax.hf import encoder_maps, t5_map, tokenizer_files, transfo_xl_map, xlnet_map
from prottrans_jax.hf.common import SAVE_DTYPES, CheckpointError
from prottrans_jax.model_io import LoadedModel, encoder_of
from prottrans_jax.models.electra import split_pretraining_params

PROVENANCE_FILE = "prottrans_jax_export.json"
_ENCODER_ARCHITECTURE = {"bert": "BertModel", "albert": "AlbertModel", "electra": "ElectraModel"}
# The autoregressive pair: the LM head model (its backbone with --encoder-only) and the tokenizer.
_AUTOREGRESSIVE_MAPS = {"xlnet": xlnet_map, "transfo_xl": transfo_xl_map}


def export_model(model: LoadedModel, out_dir: str | pathlib.Path, *, encoder_only: bool = False,
                 dtype: str = "float32", overwrite: bool = False) -> pathlib.Path:
    """Writes ``model`` as a folder that ``transformers`` loads with ``from_pretrained(out_dir)``, offline.

    T5 -> ``T5ForConditionalGeneration`` (``T5EncoderModel`` with ``encoder_only``) + ``T5Tokenizer``
    files; BERT/ALBERT -> ``*ForMaskedLM`` (``*Model``) + ``BertTokenizer`` files; our ELECTRA pair ->
    the discriminator (``ElectraForPreTraining``) in ``out_dir`` and the generator
    (``ElectraForMaskedLM``) in ``out_dir/generator``; XLNet -> ``XLNetLMHeadModel`` (``XLNetModel``) +
    ProtXLNet's ``XLNetTokenizer`` files; Transformer-XL -> transformers 4.35's ``TransfoXLLMHeadModel``
    (``TransfoXLModel``) + ProtBert's ``BertTokenizer`` files (tokenizers only for those vocabularies' sizes).
    The folder appears only once complete.

    Args:
      model: from :func:`prottrans_jax.model_io.load_model`.
      out_dir: the folder to create.
      encoder_only: write just the embedding encoder (as ProtTrans' ``*-enc`` releases).
      dtype: weight dtype: 'float32', 'float16' (as ``prot_t5_xl_half_uniref50-enc``) or 'bfloat16'.
      overwrite: replace an existing non-empty ``out_dir``.

    Raises:
      CheckpointError: the model cannot be written as asked (e.g. a full model from encoder-only weights).
      FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
    """
    if dtype not in SAVE_DTYPES:  # before any work (save_safetensors checks it again when writing)
        raise ValueError(f"dtype {dtype!r} not in {SAVE_DTYPES}")
    if model.encoder_only and not encoder_only:
        raise CheckpointError(f"{model.source}: holds only an encoder ({model.architecture}); "
                              "export it with --encoder-only")
    with atomic_files.atomic_directory(out_dir, overwrite) as tmp:
        written = _write(model, tmp, encoder_only, dtype)
        provenance = {
            "source": model.source, "step": model.step, "source_architecture": model.architecture,
            "architecture": written, "encoder_only": encoder_only, "dtype": dtype,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return pathlib.Path(out_dir)


def _write(model: LoadedModel, out: pathlib.Path, encoder_only: bool, dtype: str) -> str:
    """Writes weights, config and tokenizer into ``out``; returns the HF architecture written."""
    if model.family == "t5":
        params = encoder_of(model)[2] if encoder_only else model.params
        t5_map.export_t5(model.config, params, out, encoder_only=encoder_only, dtype=dtype)
        tokenizer_files.write_prot_t5_tokenizer(out)
        return "T5EncoderModel" if encoder_only else "T5ForConditionalGeneration"
    if model.family in _AUTOREGRESSIVE_MAPS:
        return _write_autoregressive(model, out, encoder_only, dtype)
    if encoder_only:
        _, config, params = encoder_of(model)
        arch = _ENCODER_ARCHITECTURE[model.family]
        encoder_maps.export_hf(arch, config, params, out, dtype)
        return arch
    if model.architecture == "ElectraPretrainingModel":
        # The discriminator (the model ProtTrans embeds with) at the top, the generator beside it.
        generator, discriminator = split_pretraining_params(model.params)
        encoder_maps.export_hf("ElectraForPreTraining", model.config.discriminator, discriminator, out, dtype)
        encoder_maps.export_hf("ElectraForMaskedLM", model.config.generator, generator, out / "generator", dtype)
        return "ElectraForPreTraining"
    encoder_maps.export_hf(model.architecture, model.config, model.params, out, dtype)
    return model.architecture


def _write_autoregressive(model: LoadedModel, out: pathlib.Path, encoder_only: bool, dtype: str) -> str:
    """XLNet / Transformer-XL: the LM head model, or with ``encoder_only`` its backbone, + tokenizer files."""
    family_map = _AUTOREGRESSIVE_MAPS[model.family]
    arch = family_map.MAP.backbone if encoder_only else model.architecture
    params = encoder_of(model)[2] if encoder_only else model.params
    family_map.export_hf(arch, model.config, params, out, dtype)
    if model.family == "xlnet" and model.config.vocab_size == xlnet_alphabet.VOCAB_SIZE:
        tokenizer_files.write_xlnet_tokenizer(out)
    if model.family == "transfo_xl" and model.config.vocab_size == alphabet.PROT_BERT_VOCAB_SIZE:
        # ProtTXL reads ProtBert's ids; BertTokenizer adds the [CLS] ... [SEP] a protein is. No length limit.
        tokenizer_files.write_prot_bert_tokenizer(out, model_max_length=1_000_000)
    return arch
