"""The store: record schemas, shard files and their scan index, the sweep folder, the response cache,
the sweep lock and the manifest.

On disk (each module's docstring draws its part)::

    <root>/<sweep>/                      jobs.store.sweep: sweep.yaml, manifest.json, generations/, judgments/
    <root>/<sweep>/<records>/...         jobs.store.shards: shard-<digest>.parquet, _index/segment-<digest>.parquet
    <root>/<sweep>/.lock, .lock.json     jobs.store.lock
    <cache>/ctx=<context>/...            jobs.store.response_cache

Files are written through :mod:`cluster.storage.atomic` and locations opened by :mod:`cluster.storage.uri`.
"""
