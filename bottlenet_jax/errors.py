"""The errors a user can cause, each printed by the entry points as one line `error: ...`.

The bottom of the import graph: every module may raise these, this module imports nothing.
"""


class ConfigError(ValueError):
    """A configuration value is out of range or unknown; the message names the valid choices."""


class CheckpointError(RuntimeError):
    """A checkpoint or export directory cannot be read or written; one line says which and why."""


class DataError(RuntimeError):
    """A dataset is missing, unprepared or too small for the config; one line says what to run."""
