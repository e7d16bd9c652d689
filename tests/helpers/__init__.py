"""Code the test modules share (``pyproject.toml`` puts tests/ on the path, so ``import helpers`` works):

- :mod:`helpers.configs`: the repository, the data mirror, configs composed from the real config tree;
- :mod:`helpers.data`: tiny PTB and IMDB data written by the tests, and an independent PTB reader;
- :mod:`helpers.cli`: running the real command line in a subprocess.

Fixtures and hooks stay in ``conftest.py``.
"""
