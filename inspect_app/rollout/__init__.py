"""Model lifecycle: the registry, a deployment per line, and which version decides each part.

- `policy`: pure. The modes, the assignment of a part to an arm (split, sticky A/B, Thompson
  sampling with an exploration floor), the canary step verdict, the paired comparison.
- `registry`: registered versions (immutable, content-addressed copies in the data folder).
- `deployments`: a line's champion and candidate in the database, every change an event.
- `serving`: the loaded versions (one micro-batcher each) and each process's view of the
  deployments, following changes made by any process.
"""
