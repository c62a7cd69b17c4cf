"""PSK encryption: Fernet keys from the environment or a key file, MultiFernet rotation.
There is no plaintext mode: with no key configured every PSK operation raises."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import EncryptionError, ValidationError
from .models import CardProfile

__all__ = ["ENV_KEY", "ENV_KEYS", "ENV_KEY_FILE", "check_keys", "configured_keys", "decrypt_psk",
           "encrypt_psk", "generate_key", "rotate_psks"]

ENV_KEYS = "CARDLINK_ENCRYPTION_KEYS"
ENV_KEY = "CARDLINK_ENCRYPTION_KEY"
ENV_KEY_FILE = "CARDLINK_ENCRYPTION_KEY_FILE"

_SPLIT = re.compile(r"[\s,]+")
_NO_KEY = (
    f"{ENV_KEY} not set: PSK keys are never stored unencrypted; create a key with "
    f"`cardlink-db keys generate` and run: export {ENV_KEY}=<the key> "
    f"(or put it in a 0600 file named by {ENV_KEY_FILE})"
)
_INVALID = (
    "Invalid key or corrupted data: the PSK was encrypted with another key or the stored "
    f"value was altered; restore the original key (put it after the new one in {ENV_KEYS} "
    "and run `cardlink-db keys rotate`), or run `cardlink-db keys check`"
)


def generate_key() -> str:
    """A new random Fernet key (url-safe base64 text)."""
    return Fernet.generate_key().decode("ascii")


def encrypt_psk(key: bytes) -> bytes:
    """The Fernet token of PSK ``key``, written with the newest configured key."""
    return _cipher().encrypt(_psk_bytes(key))


def decrypt_psk(token: bytes) -> bytes:
    """The PSK inside ``token``; any configured key may open it."""
    cipher, token = _cipher(), _token_bytes(token)
    try:
        return cipher.decrypt(token)
    except InvalidToken:
        pass
    # Raised outside the except block: no __context__, so no frame holding the token.
    raise EncryptionError(_INVALID)


def configured_keys() -> list[dict]:
    """Where each configured key comes from and its short fingerprint, newest first."""
    return _described(_load_keys())


def _described(keys) -> list[dict]:
    return [{"position": i, "source": label, "fingerprint": _fingerprint(key)}
            for i, (label, key) in enumerate(keys, start=1)]


def _stored_psks():
    return (CardProfile.select(CardProfile.iccid, CardProfile.psk_key_encrypted)
            .where(CardProfile.psk_key_encrypted.is_null(False))
            .order_by(CardProfile.iccid).tuples())


def rotate_psks(manager, progress=None) -> int:
    """Re-encrypt every stored PSK with the newest key in one transaction (all or nothing);
    returns the count. ``progress(n)`` is called after each PSK. A PSK another connection
    changed after it was read is read again and rotated as it is now, never overwritten."""
    cipher = _cipher()
    manager.ensure_connection()
    count = 0
    with manager.atomic():
        unreadable = []
        for iccid, token in list(_stored_psks()):
            while token is not None:  # None: the card or its PSK was deleted meanwhile
                try:
                    new = cipher.rotate(_token_bytes(token))
                except InvalidToken:
                    unreadable.append(iccid)
                    break
                if _replace_token(iccid, token, new):
                    count += 1
                    if progress is not None:
                        progress(count)
                    break
                token = _locked_token(manager.database, iccid, token)
        if unreadable:
            raise EncryptionError(
                f"{len(unreadable)} PSK(s) cannot be opened with the configured keys "
                f"(ICCID {', '.join(unreadable[:5])}{', ...' if len(unreadable) > 5 else ''}); "
                f"nothing was re-encrypted: add the old key to {ENV_KEYS} after the new one"
            )
    return count


def _replace_token(iccid: str, token, new: bytes) -> bool:
    """Write ``new`` only where the card still holds ``token`` (the one read)."""
    return bool(CardProfile.update(psk_key_encrypted=new)
                .where(CardProfile.iccid == iccid, CardProfile.psk_key_encrypted == token)
                .execute())


def _locked_token(database, iccid: str, stale):
    """The card's PSK token as committed now, its row locked (FOR UPDATE: MariaDB's
    repeatable read would otherwise give the snapshot's token again); None if gone."""
    token = (CardProfile.select(CardProfile.psk_key_encrypted)
             .where(CardProfile.iccid == iccid).for_update(database.for_update).scalar())
    if token is not None and _token_bytes(token) == _token_bytes(stale):
        # Unchanged yet not matched: a token stored by hand as text, not as a blob.
        raise EncryptionError(f"the PSK of card {iccid} is not stored as binary data; "
                              "nothing was re-encrypted: store it again with update_psk()")
    return token


def check_keys(manager) -> dict:
    """How many stored PSKs each configured key opens, and which no key opens."""
    keys = _load_keys()
    ciphers = [_single(label, key) for label, key in keys]
    report = [{**entry, "opens": 0} for entry in _described(keys)]
    unreadable = []
    total = 0
    manager.ensure_connection()
    for iccid, token in _stored_psks().bind(manager.database).iterator():
        total += 1
        token = _token_bytes(token)
        opened = False
        for entry, cipher in zip(report, ciphers, strict=True):
            try:
                cipher.decrypt(token)
            except InvalidToken:
                pass  # another key may open it
            else:
                entry["opens"] += 1
                opened = True
        if not opened:
            unreadable.append(iccid)
    return {"keys": report, "total": total, "unreadable": unreadable, "ok": not unreadable}


def _cipher() -> MultiFernet:
    return _build(tuple(_load_keys()))


@functools.lru_cache(maxsize=8)
def _build(keys: tuple[tuple[str, str], ...]) -> MultiFernet:
    return MultiFernet([_single(label, key) for label, key in keys])


@functools.lru_cache(maxsize=16)
def _single(label: str, key: str) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        pass
    # Raised outside the except block so no chained frame holds the bad key.
    raise EncryptionError(
        f"{label} is not a valid Fernet key (it must be 32 url-safe base64-encoded "
        "bytes); create one with `cardlink-db keys generate`"
    )


def _load_keys() -> list[tuple[str, str]]:
    """(source label, key) pairs, newest first, from the first source that is set."""
    many = os.environ.get(ENV_KEYS, "").strip()
    if many:
        keys = [k for k in _SPLIT.split(many) if k]
        if not keys:
            raise EncryptionError(
                f"{ENV_KEYS} is set but holds no key; put keys from `cardlink-db keys "
                "generate` in it, newest first, separated by commas"
            )
        return [(f"{ENV_KEYS} key #{i}", k) for i, k in enumerate(keys, start=1)]
    one = os.environ.get(ENV_KEY, "").strip()
    if one:
        return [(ENV_KEY, one)]
    path = os.environ.get(ENV_KEY_FILE, "").strip()
    if path:
        return _read_key_file(path)
    raise EncryptionError(_NO_KEY)


def _read_key_file(path: str) -> list[tuple[str, str]]:
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise EncryptionError(
            f"{ENV_KEY_FILE} names {path!r}, which cannot be read ({exc.strerror}); "
            "fix the path or create the file with `cardlink-db keys generate`"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EncryptionError(
            f"{ENV_KEY_FILE} names {path!r}, which is not a regular file; point it at a key "
            "file (cardlink-db keys generate -o FILE writes one)")
    with os.fdopen(fd, encoding="utf-8", errors="replace") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:
            raise EncryptionError(
                f"key file {path!r} is open to group or others (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
        text = handle.read()
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        keys += [(f"key file {path!r} line {number}", k) for k in _SPLIT.split(line) if k]
    if not keys:
        raise EncryptionError(
            f"key file {path!r} holds no key; put the output of `cardlink-db keys generate` "
            "in it, newest key first, one per line"
        )
    return keys


def _fingerprint(key: str) -> str:
    # 32 bits of a hash: enough to tell keys apart, nothing to learn the key from.
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:8]


def _psk_bytes(key) -> bytes:
    if isinstance(key, bytes | bytearray | memoryview):
        key = bytes(key)
        if key:
            return key
        raise ValidationError("the PSK key is empty; pass the key bytes (e.g. bytes.fromhex(...))")
    raise ValidationError(
        f"the PSK key must be bytes, not {type(key).__name__}; "
        "pass bytes (for a hex string use bytes.fromhex(...))"
    )


def _token_bytes(token) -> bytes:
    if isinstance(token, str):
        return token.encode("ascii", "replace")
    if isinstance(token, bytes | bytearray | memoryview):
        return bytes(token)  # PostgreSQL returns BYTEA as memoryview
    raise EncryptionError(
        f"an encrypted PSK must be bytes, not {type(token).__name__}; "
        "pass the stored psk_key_encrypted value"
    )
