"""The per-experiment secret that NNI's dashboard and REST API ask for (access_guard.js), and where it is kept.

The token is made before `nnictl create` (the manager reads it from RESNAS_TOKEN when it starts) and stored in
the experiment's folder once NNI has named it, readable by its owner only, so `resnas resume` can give the
manager the same one and the browser's cookie keeps working. nnictl itself checks the manager over REST while
it starts it: run_nnictl is nnictl with RESNAS_TOKEN on those calls.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from trainers.atomic import atomic_write_text

TOKEN_ENV = "RESNAS_TOKEN"
TOKEN_FILE = "resnas_token"  # in experimentWorkingDirectory/ID, beside NNI's db/ and log/


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_file(folder: Path) -> Path:
    return Path(folder).expanduser() / TOKEN_FILE


def save_token(folder: Path, token: str) -> Path:
    """Written atomically through a mkstemp file, which is created 0600: never readable by others, not even briefly."""
    path = token_file(folder)
    atomic_write_text(path, token + "\n")
    os.chmod(path, 0o600)  # mkstemp's mode already; said again in case a umask-less platform differs
    return path


def load_token(folder: Path) -> str | None:
    """The stored token, or None when the experiment has none (made with --no-token, or before tokens)."""
    try:
        token = token_file(folder).read_text().strip()
    except OSError:
        return None
    return token or None


def resumed_token(folder: Path) -> str:
    """The token stored for this experiment (so a browser's cookie still works), or a new one."""
    return load_token(folder) or new_token()


class _RequestsWithToken:
    """Stands in for the `requests` module inside nni.experiment.rest: every call carries the token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def request(self, method: str, url: str, **kwargs):
        import requests

        headers = dict(kwargs.pop("headers", None) or {})
        headers["Authorization"] = f"token {self.token}"
        return requests.request(method, url, headers=headers, **kwargs)


def run_nnictl(argv: list[str]) -> int:
    """`nnictl ARGV`; with RESNAS_TOKEN set, its REST calls (check-status, POST /experiment) send it."""
    import nni.experiment.rest
    from nni.tools.nnictl.nnictl import parse_args

    token = os.environ.get(TOKEN_ENV)
    if token:
        nni.experiment.rest.requests = _RequestsWithToken(token)
    sys.argv = ["nnictl", *argv]
    return parse_args() or 0
