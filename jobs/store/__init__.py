"""The store: record schemas, shard files and their scan index, the sweep folder, the response cache,
the sweep lock and the manifest."""
