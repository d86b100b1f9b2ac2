"""Secrets the index keeps (webhook secrets set through REST), sealed with a key it does not
hold, so that a copy of the database (a backup, a dump for support) does not give them away.

The key is ``NOCTIS_INDEX_SECRETS_KEY``: in production from a Secret, in every pod of the
Archive (its ``indexSecretsKey``); several keys, comma-separated, rotate it (the first seals,
any opens). Embedded without it, a key is generated once into ``<data dir>/index-secrets.key``
(mode 0600, beside the index: it keeps the index file alone from giving the secrets away).
In production without a key nothing is sealed: setting such a secret is refused, and a sealed
one cannot be opened (the call is not made, and says why).

A sealed value is ``fernet:`` and a Fernet token (AES-128-CBC with HMAC-SHA256, from
``cryptography``) made with a key derived from the configured one by HKDF. A value without
that prefix was stored before sealing: it is still read, and sealed at its next write.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from noctis.settings import Settings, index_secrets_keys

PREFIX = "fernet:"
KEY_FILE = "index-secrets.key"
_PURPOSE = b"noctis index secrets v1"


class IndexSecretsUnavailable(RuntimeError):
    """No key to seal or open a secret with, or a sealed value no configured key opens."""


@dataclass(frozen=True)
class Sealer:
    fernet: MultiFernet | None  # None: production without NOCTIS_INDEX_SECRETS_KEY

    def seal(self, secret: str) -> str:
        if self.fernet is None:
            raise IndexSecretsUnavailable(
                "this archive has no NOCTIS_INDEX_SECRETS_KEY to seal secrets kept in the "
                "index with: set it (the Archive's indexSecretsKey) or declare the webhook on "
                "the Facility resource with a Secret"
            )
        return PREFIX + self.fernet.encrypt(secret.encode()).decode()

    def reseal(self, stored: str) -> str:
        """A stored value sealed with the first key (rotation), or sealed at last if it was
        kept before sealing."""
        if not is_sealed(stored):
            return self.seal(stored)
        self.open(stored)  # the same error as opening when no key here opens it
        assert self.fernet is not None
        return PREFIX + self.fernet.rotate(stored[len(PREFIX) :].encode()).decode()

    def open(self, stored: str) -> str:
        """The secret a stored value holds (a value stored before sealing: as it is)."""
        if not stored.startswith(PREFIX):
            return stored
        if self.fernet is None:
            raise IndexSecretsUnavailable(
                "a sealed secret cannot be opened: NOCTIS_INDEX_SECRETS_KEY is not set here"
            )
        try:
            return self.fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise IndexSecretsUnavailable(
                "a sealed secret opens with none of the keys in NOCTIS_INDEX_SECRETS_KEY "
                "(was the key changed without keeping the old one after it?)"
            ) from None


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def sealer(settings: Settings) -> Sealer:
    """The sealer of this archive's settings (embedded: creating the key file if need be)."""
    keys = index_secrets_keys(settings.index_secrets_key.get_secret_value())
    if not keys and settings.embedded:
        key_file = settings.data_dir / KEY_FILE
        try:  # an emptied or damaged file never seals with a guessable key
            keys = index_secrets_keys(_embedded_key(key_file))
        except ValueError as damaged:
            raise IndexSecretsUnavailable(f"{key_file}: {damaged}") from None
        if not keys:
            raise IndexSecretsUnavailable(f"{key_file} holds no key")
    if not keys:
        return Sealer(None)
    return Sealer(MultiFernet([Fernet(_derived(key)) for key in keys]))


def _derived(key: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE)
    return base64.urlsafe_b64encode(hkdf.derive(key.encode()))


def _embedded_key(path: Path) -> str:
    """The key in ``path``, written there first if there is none (published whole with a
    hard link: two processes starting together both read the one linked first)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(32) + "\n")
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink()
        _sync_directory(path.parent)  # losing the key would lose every secret sealed with it
    return path.read_text().strip()


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
