"""Sharded on-disk gradient datastore.

Each example's *trajectory* is its projected gradient feature at every proxy checkpoint:
an array of shape (checkpoints, dim). Rows are written in shards of ``shard_size`` examples
as ``shard-NNNNN.npy`` (float16 by default), and a ``manifest.json`` records shape, dtype,
projection, checkpoint hashes and a sha256 per shard. Opening a store memory-maps the shards.

Modules
    ``store``: the read side (format constants, ``GradientStore``, ``open_datastore``,
    ``read_manifest``, ``verify_datastore``). ``build``: the build side (``DatastoreSpec``,
    ``build_datastore``, the feature computer, shard writing, resume, the directory claim and
    lock). ``dask``: the missing shards of a build computed on Dask workers.
"""

from curation.datastore.build import (
    BuildReport,
    DatastoreSpec,
    build_datastore,
    parse_params,
)
from curation.datastore.dask import check_scheduler
from curation.datastore.store import (
    DTYPES,
    FORMAT_VERSION,
    STATS_FILE,
    GradientStore,
    open_datastore,
    read_manifest,
    verify_datastore,
)

__all__ = [
    "DTYPES",
    "FORMAT_VERSION",
    "STATS_FILE",
    "BuildReport",
    "DatastoreSpec",
    "GradientStore",
    "build_datastore",
    "check_scheduler",
    "open_datastore",
    "parse_params",
    "read_manifest",
    "verify_datastore",
]
