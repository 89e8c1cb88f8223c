"""The sweep spec: schema, checks, loading a sweep file, recipe grids, judges added later."""
