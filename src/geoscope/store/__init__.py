"""The embedding store: a dataset turned into embeddings once; training and evaluation read it.

A store is a set of shards (each one writer's ``embeddings.npy`` + ``meta.parquet``) listed by a
manifest (``store.json``); one process writes the one-shard case, a Ray job one shard per actor.
The modules, along the store's seams:

- ``layout``: file names, the manifest, the order of shards;
- ``lock``: ``store.lock``, one writing job at a time;
- ``shard``: writing a shard (in-place rows + journal) and finishing a store (each sample kept once);
- ``reader``: ``EmbeddingStore`` (memory-mapped union of the shards, ``iter_batches`` for streaming);
- ``decode``: input samples and the decoding worker processes;
- ``embed``: ``embed_dataset``, the single-process executor;
- ``ray_embed``: ``embed_dataset_ray``, the Ray executor (needs the ``ray`` extra; imported on use).
"""

from geoscope.store.embed import default_workers, embed_dataset
from geoscope.store.layout import (
    EMBEDDINGS,
    ERRORS,
    JOURNAL,
    LOCK,
    META,
    SHARD_STATE,
    STATE,
    STORE_VERSION,
    remove_store,
)
from geoscope.store.lock import StoreLock
from geoscope.store.reader import Batch, EmbeddingStore, Shard, ShardedArray

__all__ = [
    "EmbeddingStore", "ShardedArray", "Shard", "Batch", "embed_dataset", "embed_dataset_ray", "default_workers",
    "remove_store", "StoreLock", "STATE", "SHARD_STATE", "EMBEDDINGS", "META", "ERRORS", "JOURNAL", "LOCK",
    "STORE_VERSION",
]


def __getattr__(name: str):
    if name == "embed_dataset_ray":  # the Ray executor, imported on first use (it needs the ray extra only when run)
        from geoscope.store.ray_embed import embed_dataset_ray

        return embed_dataset_ray
    raise AttributeError(f"module 'geoscope.store' has no attribute {name!r}")
