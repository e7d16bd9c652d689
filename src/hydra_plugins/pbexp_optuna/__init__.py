"""pbexp's Optuna sweeper for Hydra: `hydra/sweeper=pbexp_optuna` (see optuna_sweeper.py)."""
