"""Package signing: the pipeline's key (generated once, mode 600, the environment wins) and the
runtime's two Ed25519 verifiers (cryptography's, and the bundled pure-Python one for bare devices)."""

import os
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from pipeline import evergreen_edge as runtime, signing


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch):
    monkeypatch.delenv(signing.SIGNING_KEY_ENV, raising=False)


def test_a_key_is_generated_on_first_use_with_mode_600_and_reused(tmp_path: Path):
    secrets = tmp_path / "secrets"
    first = signing.load_or_create_signing_key(secrets)
    private = secrets / signing.PRIVATE_KEY_FILE
    assert private.stat().st_mode & 0o777 == 0o600
    assert signing.public_key_path(secrets).read_bytes() == signing.public_key_pem(first)
    assert sorted(p.name for p in secrets.iterdir()) == [signing.PRIVATE_KEY_FILE, signing.PUBLIC_KEY_FILE]
    stored = private.read_bytes()
    again = signing.load_or_create_signing_key(secrets)
    assert signing.public_key_bytes(again) == signing.public_key_bytes(first) and private.read_bytes() == stored
    assert runtime.trusted_public_key(signing.public_key_path(secrets)) == signing.public_key_bytes(first)


def test_the_environment_variable_wins_and_its_public_half_is_exported(tmp_path: Path, monkeypatch):
    on_disk = signing.load_or_create_signing_key(tmp_path)
    from_env = Ed25519PrivateKey.generate()
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, signing.private_key_pem(from_env).decode())
    used = signing.load_or_create_signing_key(tmp_path)
    assert signing.public_key_bytes(used) == signing.public_key_bytes(from_env) != signing.public_key_bytes(on_disk)
    assert signing.public_key_path(tmp_path).read_bytes() == signing.public_key_pem(from_env)
    assert (tmp_path / signing.PRIVATE_KEY_FILE).read_bytes() == signing.private_key_pem(on_disk)


def test_an_unusable_key_is_refused_naming_where_it_came_from(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, "not a key")
    with pytest.raises(signing.SigningKeyError, match=f"{signing.SIGNING_KEY_ENV}: not an unencrypted PEM private key"):
        signing.load_or_create_signing_key(tmp_path)
    monkeypatch.delenv(signing.SIGNING_KEY_ENV)
    ed448 = Ed448PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (tmp_path / signing.PRIVATE_KEY_FILE).write_bytes(ed448)
    with pytest.raises(signing.SigningKeyError, match=f"{signing.PRIVATE_KEY_FILE}: a .*Ed448.*, not an Ed25519 private key"):
        signing.load_or_create_signing_key(tmp_path)


def test_a_key_another_process_created_first_is_the_one_used(tmp_path: Path, monkeypatch):
    """Two processes on a fresh machine: the second to link its key must adopt the first one's."""
    winner, real_link = Ed25519PrivateKey.generate(), os.link

    def link_after_another_process(src, dst):
        Path(dst).write_bytes(signing.private_key_pem(winner))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_another_process)
    used = signing.load_or_create_signing_key(tmp_path)
    assert signing.public_key_bytes(used) == signing.public_key_bytes(winner)
    assert sorted(p.name for p in tmp_path.iterdir()) == [signing.PRIVATE_KEY_FILE, signing.PUBLIC_KEY_FILE]


def test_signatures_are_deterministic_and_name_their_key():
    key = Ed25519PrivateKey.generate()
    assert signing.sign(key, b"manifest") == signing.sign(key, b"manifest") != signing.sign(key, b"manifest!")
    assert signing.key_id(key) == signing.key_id(key.public_key()) == runtime.key_id(signing.public_key_bytes(key))
    assert len(signing.key_id(key)) == 16


@pytest.fixture(params=["cryptography", "pure-python"])
def verify(request, monkeypatch):
    """``runtime.verify_signature`` as a device with or without ``cryptography`` runs it."""
    if request.param == "pure-python":
        calls, bundled = [], runtime.ed25519_verify
        monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric.ed25519", None)  # import fails
        monkeypatch.setattr(runtime, "ed25519_verify", lambda *args: calls.append(args) or bundled(*args))
        yield runtime.verify_signature
        assert calls, "the bundled verifier was not used"
    else:
        yield runtime.verify_signature


def test_both_verifiers_accept_genuine_signatures_and_refuse_altered_ones(verify):
    for size in (0, 1, 64, 1000):
        key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        public, message = signing.public_key_bytes(key), os.urandom(size)
        signature = signing.sign(key, message)
        assert verify(public, message, signature)
        assert not verify(public, message + b"\0", signature)
        assert not verify(public, flip(message, size // 2) if message else b"x", signature)
        assert not verify(public, message, flip(signature, 5))  # in R
        assert not verify(public, message, flip(signature, 40))  # in S
        assert not verify(public, message, signing.sign(other, message))
        assert not verify(signing.public_key_bytes(other), message, signature)
        assert not verify(public, message, signature[:63])


def test_both_verifiers_refuse_a_non_canonical_s(verify):
    """S + L passes the group equation as S does: only the S < L check refuses it (malleability)."""
    key, message = Ed25519PrivateKey.generate(), b"manifest"
    signature = signing.sign(key, message)
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + L).to_bytes(32, "little")
    assert verify(signing.public_key_bytes(key), message, signature)
    assert not verify(signing.public_key_bytes(key), message, malleated)


def test_both_verifiers_refuse_invalid_point_encodings(verify):
    key, message = Ed25519PrivateKey.generate(), b"manifest"
    signature, public = signing.sign(key, message), signing.public_key_bytes(key)
    off_curve = next(y for y in range(2, 100) if runtime._decode_point(y.to_bytes(32, "little")) is None)
    for bad in (off_curve.to_bytes(32, "little"), P.to_bytes(32, "little"), (P + 1).to_bytes(32, "little")):
        assert not verify(bad, message, signature)
        assert not verify(public, message, bad + signature[32:])


def test_the_bundled_decoder_follows_rfc_8032():
    one = (1).to_bytes(32, "little")
    assert runtime._decode_point(one) == (0, 1, 1, 0)  # the neutral element
    assert runtime._decode_point((1 | 1 << 255).to_bytes(32, "little")) is None  # x = 0 with the sign bit: "-0"
    assert runtime._decode_point((P + 1).to_bytes(32, "little")) is None  # y >= p: non-canonical
    assert runtime._decode_point((2**255 - 1).to_bytes(32, "little")) is None


def test_the_bundled_verifier_passes_rfc_8032_test_1():
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
                              "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    assert runtime.ed25519_verify(public, b"", signature)
    assert not runtime.ed25519_verify(public, b"\0", signature)


P, L = 2**255 - 19, 2**252 + 27742317777372353535851937790883648493


def flip(data: bytes, position: int) -> bytes:
    altered = bytearray(data)
    altered[position] ^= 0x01
    return bytes(altered)
