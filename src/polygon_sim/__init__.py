"""Tools that are not the product: replay of recorded archives (``replay*`` modules).

See ``docs/replay.md``. This ``__init__`` imports nothing.
"""
