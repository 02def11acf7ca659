"""
What an operator is told to do when Dhan refuses the credentials.

Each hint names only what works on a running gateway: ``SIGHUP`` re-reads the
config file and the token file (``access_token_file`` /
``DHAN_ACCESS_TOKEN_FILE``), never the process environment, so a credential
given in a ``DHAN_*`` variable takes a restart. ``SIGHUP`` retries a refused
connection only when it changed the credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["AUTH_HINTS", "TOKEN_HINT"]

#: How a new access token reaches a running gateway.
TOKEN_HINT: Final = (
    "write the new token to the token file (access_token_file or DHAN_ACCESS_TOKEN_FILE) or to "
    "access_token in the config file, then send SIGHUP; a token set in the DHAN_ACCESS_TOKEN "
    "variable takes a restart"
)

#: Feed disconnect reason -> hint, for the reasons that are authentication failures.
AUTH_HINTS: Final[Mapping[int, str]] = {
    806: "activate the Data API plan on web.dhan.co; mdgate retries once per [runtime] auth_retry",
    807: "token expired: " + TOKEN_HINT,
    808: "client id and access token do not belong together: fix client_id or the token file and "
    "send SIGHUP (DHAN_CLIENT_ID / DHAN_ACCESS_TOKEN variables take a restart)",
    809: "token invalid: " + TOKEN_HINT,
    810: "client id invalid: fix client_id in [providers.dhan] and send SIGHUP "
    "(the DHAN_CLIENT_ID variable takes a restart)",
}
