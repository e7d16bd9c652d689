"""pbexp: config-driven PyTorch experiments (PTB language models, IMDB classifiers)."""

__version__ = "0.1.0"
