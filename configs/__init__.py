# Makes configs/ the package pbexp.configs in a wheel (see pyproject.toml); holds no code.
