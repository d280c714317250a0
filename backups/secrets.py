"""Source passwords, encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256).

settings.SOURCE_SECRET_KEYS holds one or more keys: the first encrypts, every one
decrypts (MultiFernet). Rotating = put a new key first, run
`manage.py rotate_source_secrets`, then drop the old key (docs/security.md).

Nothing here logs, and no exception carries a token or a plain password.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretError(Exception):
    """A stored password cannot be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("SOURCE_SECRET_KEYS is empty: source passwords cannot be encrypted.")
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    # Keyed on the current setting, so tests (and a reloaded configuration) see a changed key list.
    return _fernet(tuple(settings.SOURCE_SECRET_KEYS))


def encrypt(raw: str) -> str:
    return fernet().encrypt(raw.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        raise SecretError(
            "The stored password cannot be decrypted with the configured SOURCE_SECRET_KEYS"
            " (was the key that encrypted it removed?). Enter the password again."
        ) from None


def rotate(token: str) -> str:
    """The same password, encrypted with the current (first) key."""
    try:
        return fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise SecretError("A stored password cannot be decrypted with any of the configured keys.") from None
