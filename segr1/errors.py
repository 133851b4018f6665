"""`UsageError`: a command was asked for something it cannot do (bad option value, missing input, no cluster).

Raise it with one line that names the bad thing (option, path, key, value); the `segr1` CLI prints that line
without a traceback. The other user-facing errors keep their own types (`segr1.config.ConfigError`,
`segr1.data.errors.DataError`); the CLI's `USER_ERRORS` lists every type it treats this way.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad user input that is neither a config key nor a dataset file, e.g. `--n: must be >= 1, got 0`."""
