"""``prottrans-jax generate``: sample proteins from ProtTXL, ProtXLNet or ProtT5's decoder into a FASTA file."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import numpy as np

from prottrans_jax import alphabet, atomic_files
from prottrans_jax.generation import lm as lm_module
from prottrans_jax.generation.causal import TransfoXLDecoder
from prottrans_jax.generation.decoding import SamplingLoop
from prottrans_jax.generation.permutation import XLNetDecoder
from prottrans_jax.generation.sampling import SamplingSettings
from prottrans_jax.generation.t5_decoding import T5Decoder, generation_encoder_input


@dataclasses.dataclass(frozen=True)
class Protein:
    """One sampled protein.

    Attributes:
      sequence: the residues (the prompt first).
      log_likelihood: the model's log-probability (temperature 1, full vocabulary) of the sampled tokens
        after the prompt, the end token included when it was drawn.
      ended: the model drew the end token (else the maximum length stopped it).
    """

    sequence: str
    log_likelihood: float
    ended: bool


class ProteinSampler:
    """Samples proteins of at most ``max_length`` residues that start with ``prompt``.

    Attributes:
      lm: the model.
      loop: the jitted sampling loop (its ``traces`` count shows it compiled once).
      batch_size: sequences sampled together (the last batch is padded to it).
    """

    def __init__(self, lm: lm_module.LanguageModel, settings: SamplingSettings, max_length: int,
                 prompt: str = "", batch_size: int = 8):
        if lm.family not in lm_module.GENERATING_FAMILIES:
            raise ValueError(f"{lm.source}: the {lm.family} family does not generate left to right")
        prompt = alphabet.normalize_sequence(prompt, "--prompt")
        if batch_size < 1:
            raise ValueError(f"--batch-size {batch_size}: must be >= 1")
        if max_length <= len(prompt):
            raise ValueError(f"--max-length {max_length}: must exceed the prompt's {len(prompt)} residues")
        frame = lm.framing
        self.lm, self.batch_size, self.prompt = lm, batch_size, prompt
        self.prompt_ids = frame.encode(prompt, "--prompt")
        self.prefix = np.concatenate([np.asarray(frame.context, np.int32), self.prompt_ids])
        self.steps = max_length - len(prompt)
        self.loop = SamplingLoop(self._decoder(max_length), frame, settings)

    def _decoder(self, max_length: int):
        capacity = len(self.prefix) + self.steps
        if self.lm.family == "transfo_xl":
            return TransfoXLDecoder(self.lm.config, capacity)
        if self.lm.family == "xlnet":
            return XLNetDecoder(self.lm.config, capacity)
        encoder_tokens = generation_encoder_input(self.lm.framing, self.prompt_ids, max_length)
        return T5Decoder(self.lm.module, encoder_tokens, capacity)

    def sample(self, num: int, seed: int, progress=None) -> list[Protein]:
        """``num`` proteins; the same seed (and batch size) gives the same proteins.

        Args:
          num: proteins to sample.
          seed: PRNG seed (batch ``b`` uses ``fold_in(key(seed), b)``).
          progress: called with the number of token steps done (``num_batches * steps`` in all).
        """
        if num < 1:
            raise ValueError(f"--num {num}: must be >= 1")
        key = jax.random.key(seed)
        prefix = np.broadcast_to(self.prefix, (self.batch_size, len(self.prefix)))
        proteins = []
        for b in range(-(-num // self.batch_size)):
            out = self.loop.run(self.lm.params, prefix, self.prompt_ids, self.steps, jax.random.fold_in(key, b),
                                progress)
            for r in range(min(self.batch_size, num - len(proteins))):
                count = int(out.residues[r]) - len(self.prompt)
                residues = self.lm.framing.decode(out.tokens[r, :count])
                proteins.append(Protein(self.prompt + residues, float(out.log_likelihood[r]), bool(out.ended[r])))
        return proteins


def fasta_text(proteins: list[Protein], model: str, prompt: str = "") -> str:
    """FASTA records ``>gen_<i> length=.. log_likelihood=.. stop=end|max_length [prompt_length=..] model=..``."""
    lines = []
    for i, p in enumerate(proteins):
        extra = f" prompt_length={len(prompt)}" if prompt else ""
        lines.append(f">gen_{i} length={len(p.sequence)} log_likelihood={p.log_likelihood:.4f} "
                     f"stop={'end' if p.ended else 'max_length'}{extra} model={model}")
        lines.extend(p.sequence[j:j + 60] for j in range(0, len(p.sequence), 60))
    return "\n".join(lines) + "\n"


def generate_fasta(model: str, out: str, *, num: int, max_length: int, seed: int, prompt: str = "",
                   settings: Optional[SamplingSettings] = None, batch_size: int = 8, step: Optional[int] = None,
                   overwrite: bool = False, progress: bool = True) -> list[Protein]:
    """Samples ``num`` proteins from ``model`` and writes them to ``out`` (FASTA, written whole or not at all).

    Raises:
      FileExistsError: ``out`` exists and ``overwrite`` is False (checked before the model is read).
      ValueError: a bad option or a model that cannot generate.
    """
    from tqdm.auto import tqdm

    atomic_files.refuse_existing(out, overwrite, "output FASTA")
    settings = settings or SamplingSettings()
    lm = lm_module.load_language_model(model, step, for_generation=True)
    sampler = ProteinSampler(lm, settings, max_length, prompt, batch_size)
    total = -(-num // batch_size) * sampler.steps
    with tqdm(total=total, unit="tok", desc="generating", disable=not progress) as bar:
        proteins = sampler.sample(num, seed, bar.update)
    with atomic_files.atomic_file(out) as tmp:
        tmp.write_text(fasta_text(proteins, model, sampler.prompt))
    return proteins
