"""seqio data sources for protein corpora: FASTA globs (plain or gzip, sharded) and TFRecord shards.

Both sources yield ``{"id": string, "sequence": string}`` with the sequence already normalised
(see ``alphabet.py``). Train and validation splits come from the same files: a record's split is a
stable hash of its id (``fasta.split_of``), so the held-out set is the same on every host and run.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Union

import numpy as np
import seqio
import tensorflow as tf

from prottrans_jax import fasta

PathsOrFn = Union[str, Sequence[str], Callable[[], Union[str, Sequence[str]]]]
SPLITS = ("train", "validation")
CHUNK_SIGNATURE = {"id": tf.TensorSpec([None], tf.string), "sequence": tf.TensorSpec([None], tf.string)}
_CHUNK = 256  # records per Python -> TF hand-over


def _resolve(paths: PathsOrFn) -> Union[str, Sequence[str]]:
    return paths() if callable(paths) else paths


class FastaDataSource(seqio.DataSource):
    """Streams FASTA shards (a glob, a list of globs, or a zero-argument callable returning them).

    The callable form resolves the paths only when data is read, so a task can be registered at
    import time while its corpus location comes later from gin or an environment variable.
    Records are validated by ``fasta.read_fasta``; a bad record stops the pipeline with a
    ``FastaError`` naming file, line and record.
    """

    def __init__(
        self,
        paths: PathsOrFn,
        validation_fraction: float = 0.005,
        max_length: Optional[int] = None,
        cycle_length: int = 4,
    ):
        self._paths = paths
        self._validation_fraction = validation_fraction
        self._max_length = max_length
        self._cycle_length = cycle_length
        super().__init__(splits=SPLITS, caching_permitted=True)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"FastaDataSource({self._paths!r}, validation_fraction={self._validation_fraction})"

    def list_shards(self, split: str) -> Sequence[str]:
        return fasta.expand_paths(_resolve(self._paths))

    def _read_file_fn(self, split: str):
        """A tf.data reader of one file, running the validating Python reader in a generator.

        The generator yields chunks of records that are unbatched in TF: crossing from Python
        into tf.data costs about a millisecond per call, which one call per record would pay.
        """

        def generator(path: bytes):
            records = fasta.read_fasta(
                os.fsdecode(path), split=split, validation_fraction=self._validation_fraction, max_length=self._max_length
            )
            ids, sequences = [], []
            for record in records:
                ids.append(record.id)
                sequences.append(record.sequence)
                if len(ids) == _CHUNK:
                    yield {"id": ids, "sequence": sequences}
                    ids, sequences = [], []
            if ids:
                yield {"id": ids, "sequence": sequences}

        def read(path: tf.Tensor) -> tf.data.Dataset:
            ds = tf.data.Dataset.from_generator(generator, output_signature=CHUNK_SIGNATURE, args=(path,))
            return ds.unbatch()

        return read

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: Optional[int] = None,
        shard_info: Optional[seqio.ShardInfo] = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: Optional[int] = 1,
    ) -> tf.data.Dataset:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for a FASTA corpus; expected one of {SPLITS}")
        files = list(self.list_shards(split))
        files_ds = tf.data.Dataset.from_tensor_slices(np.array(files, dtype=str))
        shard_records = False
        if shard_info and shard_info.num_shards > 1:
            if len(files) >= shard_info.num_shards:
                files_ds = files_ds.shard(shard_info.num_shards, shard_info.index)
            else:  # Fewer files than hosts: every host reads all files and keeps every n-th record.
                shard_records = True
        if shuffle and len(files) > 1:
            files_ds = files_ds.shuffle(len(files), seed=seed)
        if len(files) == 1:
            ds = self._read_file_fn(split)(files[0])
        else:
            ds = files_ds.interleave(
                self._read_file_fn(split),
                cycle_length=min(self._cycle_length, len(files)),
                block_length=16,
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        if shard_records:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        return ds


# ---------------------------------------------------------------------------------------
# TFRecord shards: the fast path for UniRef/BFD-sized corpora (no Python per record).
# ---------------------------------------------------------------------------------------
TFRECORD_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "sequence": tf.io.FixedLenFeature([], tf.string),
}


def fasta_to_tfrecords(
    fasta_paths: Union[str, Sequence[str]],
    out_prefix: str,
    num_shards: int = 16,
    validation_fraction: float = 0.005,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Converts FASTA to TFRecord shards ``{out_prefix}-{split}.tfrecord-{i:05d}-of-{n:05d}``.

    Records are dealt round-robin over the shards of their split. Files are written under a
    temporary name and renamed when complete, so an interrupted run never leaves a shard that
    looks finished.

    Returns:
      split -> list of shard paths written.
    """
    from tqdm import tqdm

    written: dict[str, list[str]] = {}
    writers, tmp_paths, counts = {}, {}, {}
    try:
        for split in SPLITS:
            n = num_shards if split == "train" else max(1, num_shards // 16)
            final = [f"{out_prefix}-{split}.tfrecord-{i:05d}-of-{n:05d}" for i in range(n)]
            written[split] = final
            tmp_paths[split] = [p + ".incomplete" for p in final]
            writers[split] = [tf.io.TFRecordWriter(p) for p in tmp_paths[split]]
            counts[split] = 0
        records = fasta.read_fasta(fasta_paths)
        for record in tqdm(records, desc="fasta -> tfrecord", unit=" seq", disable=not progress):
            split = fasta.split_of(record.id, validation_fraction)
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.id.encode()])),
                        "sequence": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.sequence.encode()])),
                    }
                )
            )
            shard_writers = writers[split]
            shard_writers[counts[split] % len(shard_writers)].write(example.SerializeToString())
            counts[split] += 1
    finally:
        for shard_writers in writers.values():
            for w in shard_writers:
                w.close()
    for split, final in written.items():
        for tmp, path in zip(tmp_paths[split], final):
            tf.io.gfile.rename(tmp, path, overwrite=True)
    return written


def tfrecord_source(split_to_pattern: dict[str, str]) -> seqio.TFExampleDataSource:
    """A seqio source over shards written by :func:`fasta_to_tfrecords`."""
    return seqio.TFExampleDataSource(split_to_filepattern=split_to_pattern, feature_description=TFRECORD_FEATURES)
