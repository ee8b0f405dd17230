"""Named configs of the autoregressive pair (ProtXLNet, ProtTXL, ProtTXL-BFD) and tiny test sizes.

Sources (checked with the search tool; see each factory):
- ProtXLNet: the released ``Rostlab/prot_xlnet`` (config.json of 1.35 kB, ``pytorch_model.bin`` of
  1,637,757,076 bytes). Its config.json text itself was not reachable; d_model 1024 is what
  ProtTrans' embedding notebook prints (features of shape (L, 1024)), ``mem_len`` null is what
  transformers 3.x warned about when the notebooks loaded it (they pass ``mem_len=512``), and the
  checkpoint holds ``lm_loss.weight/bias`` (the notebooks' "weights not used" message). 30 layers,
  d_inner 4096 and vocab 37 are pinned by the byte count: torch's legacy (pre-1.6) pickle of that
  state dict, serialised from empty storages with the same names, shapes and module metadata
  (transformers 5's tree less the per-layer ``ff.activation_function`` modules that 2020's XLNet
  did not have), is 1,637,756,987 bytes: 89 bytes short of the file, where one vocabulary entry
  more or less moves it by 4,100 bytes and any other depth or width by megabytes. n_head 16 (d_head 64) is XLNet-large's and does not
  change the byte count: unconfirmed.
- ProtTXL / ProtTXL-BFD: weights never released. 32 layers, d_model 1024, d_inner 4096, 14 heads,
  562 M parameters, dropout 0.15, memory length 512 are the ProtTrans paper's table as recalled;
  the search tool could not reach the table's text to confirm it. d_head 128 is inferred: it is
  the per-head size for which these numbers give 562 M (32 x 17.58 M per layer). The table gives
  one architecture for both corpora, so ProtTXL-BFD is the same network (unconfirmed).
  ProtTXL was trained with the original PyTorch Transformer-XL code (ProtTrans issue #11:
  cybertronai/transformer-xl), whose ``MemTransformerLM`` keeps one ``r_w_bias/r_r_bias`` pair for
  all layers (checked in its mem_transformer.py): ``untie_r=False``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import linen as nn

from prottrans_jax.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel, TransfoXLModel
from prottrans_jax.models.xlnet import XLNetConfig, XLNetLMHeadModel, XLNetModel

# ProtXLNet's released sizes (see the module docstring for how each was established).
_PROT_XLNET = dict(vocab_size=37, d_model=1024, n_layer=30, n_head=16, d_inner=4096, ff_activation="gelu",
                   attn_type="bi", dropout=0.1, layer_norm_eps=1e-12, mem_len=None, clamp_len=-1, pad_token_id=5)
# ProtTXL: 30 ids is ProtBert's vocabulary ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, residues);
# the vocabulary choice itself belongs to the tokenizer work (issue 12, point 2).
_PROT_TXL = dict(vocab_size=30, d_model=1024, n_layer=32, n_head=14, d_head=128, d_inner=4096, dropout=0.15,
                 dropatt=0.0, mem_len=512, clamp_len=-1, same_length=False, untie_r=False, pad_token_id=0)
_TINY = dict(d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0)


def prot_xlnet() -> XLNetConfig:
    """ProtXLNet (UniRef100): XLNet, 30 layers, d_model 1024, 16 heads, d_inner 4096, vocab 37 (~409 M)."""
    return XLNetConfig(**_PROT_XLNET)


def prot_xlnet_tiny() -> XLNetConfig:
    """Tests: ProtXLNet's vocabulary at width 32, 2 layers, 4 heads of 8, memory of 16."""
    return XLNetConfig(**{**_PROT_XLNET, **_TINY, "mem_len": 16})


def prot_txl() -> TransfoXLConfig:
    """ProtTXL (UniRef100): Transformer-XL, 32 layers, d_model 1024, 14 heads of 128, d_inner 4096 (~562 M).

    Approximate: from the ProtTrans paper's table as recalled, not confirmed (see the module docstring).
    """
    return TransfoXLConfig(**_PROT_TXL)


def prot_txl_bfd() -> TransfoXLConfig:
    """ProtTXL-BFD: the ProtTXL architecture trained on BFD (same network; unconfirmed)."""
    return TransfoXLConfig(**_PROT_TXL)


def prot_txl_tiny() -> TransfoXLConfig:
    """Tests: 2 layers, width 32, 4 heads of 8, memory of 16, no dropout."""
    return TransfoXLConfig(**{**_PROT_TXL, **_TINY, "d_head": 8, "mem_len": 16})


# name -> zero-argument factory (merged into models/configs.py's registry).
AUTOREGRESSIVE_CONFIGS: dict[str, Callable[[], Any]] = {
    "prot_xlnet": prot_xlnet,
    "prot_xlnet_tiny": prot_xlnet_tiny,
    "prot_txl": prot_txl,
    "prot_txl_bfd": prot_txl_bfd,
    "prot_txl_tiny": prot_txl_tiny,
}


def build_autoregressive_model(config: Any, encoder_only: bool = False) -> nn.Module:
    """The Linen module for one of these configs (``encoder_only``: without LM head, for embeddings).

    Raises:
      TypeError: for another config class.
    """
    table = {XLNetConfig: (XLNetModel, XLNetLMHeadModel), TransfoXLConfig: (TransfoXLModel, TransfoXLLMHeadModel)}
    if type(config) not in table:
        raise TypeError(f"no autoregressive model for {type(config).__name__}")
    base_cls, lm_cls = table[type(config)]
    return base_cls(config) if encoder_only else lm_cls(config)


MODEL_CONFIG_CLASSES = (XLNetConfig, TransfoXLConfig)
