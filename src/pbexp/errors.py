"""Errors that mean "the user asked for something wrong", as opposed to bugs.

The CLI catches :class:`PbexpError` and prints its message on one line (no traceback)
and exits non-zero; anything else is a bug and keeps its traceback.
"""


class PbexpError(Exception):
    """A user-facing error: bad config, missing or malformed data, unusable checkpoint."""


class ConfigError(PbexpError):
    """A config value is not allowed. The message names the key, the value and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


class ModelContractError(PbexpError):
    """A model does not do what its task needs (docs/ARCHITECTURE.md, "Model contracts"): a method missing or an
    output of the wrong shape, found by one forward pass on a tiny batch before the first step. The message names
    the model's class, the contract and what broke it."""

    def __init__(self, model: str, contract: str, problem: str):
        self.model, self.contract, self.problem = model, contract, problem
        super().__init__(
            f"model {model} does not meet the {contract} contract: {problem} (docs/ARCHITECTURE.md, Model contracts)"
        )


class DataError(PbexpError):
    """Data is missing, truncated or malformed. The message says which file and what to do."""


class Diverged(PbexpError):
    """Training blew up (NaN or infinite loss); the message suggests a lower learning rate."""


class DiskFull(PbexpError, OSError):
    """A write found no space left (ENOSPC) or the quota used up (EDQUOT): files.write_atomic removed its temp
    file and left the file it would have replaced untouched. The message names the folder and the space
    needed. Also an OSError, so code that carries on without a file it could not write (a cache) still does,
    and code that gives up on one (the status record after a failure) still can."""

    def __init__(self, message: str, folder, code: int):
        super().__init__(message)  # one argument: str() is the message, not "[Errno 28] ..."
        self.folder, self.errno = folder, code
