"""Test-session isolation from the machine's Ray state: the suite passes the same on a new machine.

Every Ray cluster the tests start (`ray.init`, `ray start`, `segr1 train` subprocesses) uses a token file and a
temp dir of this session's own, never `~/.ray/auth_token` or `/tmp/ray`: a token left in the user's HOME by
an earlier run must not be what makes the suite pass, and a test run must not leave one there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="segr1-t-", dir="/tmp"))  # short: Ray's socket paths must stay short


def pytest_configure(config) -> None:
    token = _SESSION_DIR / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    for key in [k for k in os.environ if k.startswith("RAY_AUTH") or k == "RAY_ADDRESS"]:
        del os.environ[key]  # a user's cluster settings must not leak into the tests' clusters
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    os.environ["RAY_TMPDIR"] = str(_SESSION_DIR)


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
