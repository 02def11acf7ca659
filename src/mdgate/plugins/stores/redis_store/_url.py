"""The Redis URL of the store and the masking of its credentials in logs and errors."""

from __future__ import annotations

from urllib.parse import urlsplit

from mdgate._config import mask_url

__all__ = ["RedisUrl"]


class RedisUrl:
    """
    A Redis URL, its masked form and :meth:`clean` for text that may quote it.

    Args:
        url: the Redis URL (``redis://``, ``rediss://`` or ``unix://``), with
            its password if any.
    """

    __slots__ = ("masked", "secret", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        #: The URL with every credential replaced by ``***`` (for logs and ``/status``).
        self.masked = mask_url(url)
        #: The password, masked in :meth:`clean`.
        self.secret = _password(url)

    def clean(self, text: str) -> str:
        """Return ``text`` (an error message) with the password and the URL masked."""
        if self.secret:
            text = text.replace(self.secret, "***")
        return text.replace(self.url, self.masked)


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None
