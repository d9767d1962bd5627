"""Ed25519 signing of edge packages: the key the pipeline signs with, and the public half devices trust.

The private key comes from ``EVERGREEN_SIGNING_KEY`` (PEM text, from a secrets manager); in the
embedded mode, when it is unset, one is generated on first use into the secrets folder (mode 600).
Either way the public half of the key in use is kept beside it as ``signing_key.pub.pem``: the
file to install on devices (``evergreen_edge.py --public-key``). Ed25519 signatures are
deterministic, so the same manifest signed with the same key gives the same package bytes.
"""

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline import atomic, evergreen_edge

SIGNING_KEY_ENV = "EVERGREEN_SIGNING_KEY"
PRIVATE_KEY_FILE, PUBLIC_KEY_FILE = "signing_key.pem", "signing_key.pub.pem"


class SigningKeyError(ValueError):
    """The configured signing key cannot be used; the message names where it came from."""


def load_or_create_signing_key(secrets_dir: Path) -> Ed25519PrivateKey:
    """The key from ``EVERGREEN_SIGNING_KEY``; else from ``secrets_dir``, generated there on first use.
    Its public half is (re)written to ``public_key_path(secrets_dir)`` when that does not match."""
    if pem := os.environ.get(SIGNING_KEY_ENV):
        key = _parse_private_key(pem.encode("utf-8"), SIGNING_KEY_ENV)
    else:
        path = secrets_dir / PRIVATE_KEY_FILE
        if not path.exists():
            atomic.create_once(path, private_key_pem(Ed25519PrivateKey.generate()))
        key = _parse_private_key(path.read_bytes(), str(path))
    public = public_key_path(secrets_dir)
    if not public.exists() or public.read_bytes() != public_key_pem(key):
        atomic.write_bytes(public, public_key_pem(key))
    return key


def public_key_path(secrets_dir: Path) -> Path:
    return secrets_dir / PUBLIC_KEY_FILE


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    return _public(key).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32 bytes, as the edge runtime takes a trusted key."""
    return _public(key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The short name manifests and signature files carry, computed as the runtime does."""
    return evergreen_edge.key_id(public_key_bytes(key))


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``data`` (deterministic: same key and data, same bytes)."""
    return key.sign(data)


def _public(key: Ed25519PrivateKey | Ed25519PublicKey) -> Ed25519PublicKey:
    return key.public_key() if isinstance(key, Ed25519PrivateKey) else key


def _parse_private_key(pem: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: the key is encrypted
        raise SigningKeyError(f"{source}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{source}: a {type(key).__name__}, not an Ed25519 private key")
    return key
