"""Contact details encrypted at rest (Fernet) and API tokens hashed (SHA-256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from api.members.errors import ContactUnreadable
from api.settings import Settings

TOKEN_BYTES = 32
_HKDF_INFO = b"ern contact encryption v1"


def derive_key(secret: bytes, *, info: bytes) -> bytes:
    """A 32-byte subkey of the service secret for one purpose (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


class ContactCipher:
    """Encrypts a member's contact dict to bytes and back."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, contact: dict[str, Any]) -> bytes:
        """Fernet token of the JSON of ``contact``."""
        return self._fernet.encrypt(json.dumps(contact, sort_keys=True).encode())

    def decrypt(self, ciphertext: bytes | None) -> dict[str, Any]:
        """The contact dict; an empty dict for no ciphertext."""
        if not ciphertext:
            return {}
        try:
            value: dict[str, Any] = json.loads(self._fernet.decrypt(bytes(ciphertext)))
        except InvalidToken as exc:
            msg = "contact details cannot be decrypted with the current ERN_SECRET_KEY"
            raise ContactUnreadable(msg) from exc
        return value


def contact_cipher(settings: Settings) -> ContactCipher:
    """The cipher keyed from ERN_SECRET_KEY."""
    return ContactCipher(derive_key(settings.secret_bytes(), info=_HKDF_INFO))


_PHONE_INDEX_INFO = b"ern phone blind index v1"


def phone_index(settings: Settings, phone: str | None) -> bytes | None:
    """Keyed HMAC-SHA256 of the E.164 number: finds a member by phone without decrypting anyone.

    The key is a subkey of ERN_SECRET_KEY, so the column alone does not reveal the numbers
    (unlike a plain hash, which anyone could compute for every possible number).
    """
    if not phone:
        return None
    number = "".join(phone.split())
    key = derive_key(settings.secret_bytes(), info=_PHONE_INDEX_INFO)
    return hmac.new(key, number.encode(), hashlib.sha256).digest()


def new_token() -> str:
    """A fresh opaque bearer token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    """SHA-256 of a token: what the database stores and looks up."""
    return hashlib.sha256(token.encode()).digest()
