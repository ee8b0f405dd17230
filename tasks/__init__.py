"""SeqIO task registrations for prottrans-jax, imported as ``prottrans_jax_tasks``.

Importing this package registers, for each corpus in ``corpora.CORPORA`` (demo, uniref50, bfd,
uniref100, custom), one task ``{corpus}_{objective}`` per objective of ``pretraining.OBJECTIVES``
(``prot_t5_denoise``, ``span_corruption``, ``bert_mlm``, ``electra``, ``txl_causal_lm``, ...). Use
``register_fasta_tasks`` for any other FASTA glob.
"""

import functools

from prottrans_jax_tasks.corpora import CORPORA, corpus_glob, corpus_paths, shipped_demo_corpus
from prottrans_jax_tasks.pretraining import (
    OBJECTIVES,
    register_fasta_tasks,
    register_objective_tasks,
    register_tfrecord_tasks,
    task_name,
)

for _corpus in CORPORA:
    register_fasta_tasks(_corpus, functools.partial(corpus_glob, _corpus))
