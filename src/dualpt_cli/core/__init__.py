"""Shared plumbing every stage uses: the project folder and its lock, atomic files, the distributed helpers, the
configs' checks and the option vocabularies."""
