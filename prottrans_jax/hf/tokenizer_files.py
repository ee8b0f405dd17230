"""HuggingFace tokenizer folders written from our tables: ProtT5, ProtXLNet (SentencePiece), ProtBert (vocab.txt)."""

from __future__ import annotations

import json
import pathlib

from prottrans_jax import alphabet


def write_prot_t5_tokenizer(out_dir: str | pathlib.Path, model_max_length: int = 1_000_000) -> pathlib.Path:
    """Writes ``spiece.model``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    ``transformers.T5Tokenizer.from_pretrained(out_dir)`` (offline) then gives the released ProtT5
    tokenizer's ids on space-separated residues: 28 pieces plus 100 sentinels ``<extra_id_i>`` = 127 - i.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    alphabet.write_prot_t5_sentencepiece_model(out / "spiece.model")
    sentinels = [f"<extra_id_{i}>" for i in range(alphabet.PROT_T5_NUM_SENTINELS)]
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
               "additional_special_tokens": sentinels}
    tokenizer_config = {"tokenizer_class": "T5Tokenizer", "do_lower_case": False,
                        "extra_ids": alphabet.PROT_T5_NUM_SENTINELS, "model_max_length": int(model_max_length),
                        "legacy": True, **special}
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return out


def write_prot_bert_tokenizer(out_dir: str | pathlib.Path, model_max_length: int = 40000) -> pathlib.Path:
    """Writes ProtBert's ``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    ``transformers.BertTokenizer.from_pretrained(out_dir)`` (or ``AutoTokenizer``) then tokenises
    space-separated residues, case kept (``do_lower_case`` false), adding [CLS]/[SEP].
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    alphabet.write_prot_bert_vocab(out)
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
               "mask_token": "[MASK]"}
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": False, "do_basic_tokenize": True,
                        "strip_accents": False, "tokenize_chinese_chars": False,
                        "model_max_length": int(model_max_length), **special}
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return out


XLNET_TOKENIZER_FILES = ("spiece.model", "tokenizer_config.json", "special_tokens_map.json")


def write_xlnet_tokenizer(out_dir: str | pathlib.Path, model_max_length: int = 1_000_000) -> pathlib.Path:
    """Writes ProtXLNet's ``spiece.model``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    ``transformers.XLNetTokenizer.from_pretrained(out_dir)`` then gives the released ProtXLNet ids on ProtTrans'
    input (residues space-separated, rare ones as ``<unk>``), appends ``<sep> <cls>`` and pads on the left.
    The unknown token is named ``X``, the released piece 0: under its default name ``<unk>`` transformers 5
    would add ``<unk>`` as a 38th token. Text ``<unk>`` is still id 0 (an unknown word), and so is each ``X``.
    """
    from prottrans_jax import xlnet_alphabet

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    xlnet_alphabet.write_sentencepiece_model(out / "spiece.model")
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": xlnet_alphabet.UNK_PIECE, "sep_token": "<sep>",
               "pad_token": "<pad>", "cls_token": "<cls>", "mask_token": "<mask>",
               "additional_special_tokens": ["<eop>", "<eod>"]}
    tokenizer_config = {"tokenizer_class": "XLNetTokenizer", "do_lower_case": False, "remove_space": True,
                        "keep_accents": False, "padding_side": "left", "model_max_length": int(model_max_length),
                        **special}
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return out
