"""Who made an archive: an ed25519 signature over its index, checked against trusted keys.

age gives confidentiality, not authenticity: anyone who knows a recipient's public key (it sits
in seedbed.yaml) can write an archive that decrypts and whose hashes agree with its own index.
So ``seedbed backup`` signs index.json (which holds the sha256 and size of every other entry) with
a key only the user holds, and stores the signature as ``index.sig`` inside the encrypted tar;
restore refuses an archive no trusted key signed, unless ``--insecure-skip-signature``.

``index.sig`` is JSON: ``{"format": "seedbed-signature", "algorithm": "ed25519", "signer":
"ssh-ed25519 AAAA...", "signature": "<base64>"}``. The signed message is ``_CONTEXT`` followed by
the exact bytes of index.json, so the signature can never be replayed as one over anything else.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from seedbed import files, yamlutil
from seedbed.errors import ArchiveError, ConfigError

if TYPE_CHECKING:
    from seedbed.config import Config

SIGNATURE = "index.sig"
SKIP_FLAG = "--insecure-skip-signature"
_FORMAT = "seedbed-signature"
_CONTEXT = b"seedbed-backup-index-v1\x00"
SIGNING_KEY_NAME = "signing.key"
_COMMENT = "seedbed-backup-signing"


# --------------------------------------------------------------------------- keys


def default_identity_path() -> Path:
    """Where `seedbed keygen` puts the age identity, and where every command looks for it."""
    import platformdirs

    return Path(platformdirs.user_config_dir("seedbed")) / "age.key"


def default_signing_key_path(cfg: Config) -> Path:
    """backup.signingKey, else ``signing.key`` beside the age identity (backup.identityFile or its default)."""

    if cfg.backup.signing_key:
        return cfg.resolve(cfg.backup.signing_key)
    identity = cfg.resolve(cfg.backup.identity_file) if cfg.backup.identity_file else default_identity_path()
    return identity.parent / SIGNING_KEY_NAME


def public_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{raw} {_COMMENT}"


def fingerprint(public: str | Ed25519PublicKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it, to name a key without printing it whole."""
    if isinstance(public, Ed25519PublicKey):
        public = public_text(public)
    blob = base64.b64decode(public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_public(value: str, *, where: str = "backup.trustedSigners") -> Ed25519PublicKey:
    fix = "copy the ssh-ed25519 line `seedbed keygen` printed for the signing key"
    parts = value.split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise ConfigError(f"{where}: {value[:24]!r}... is not an ssh-ed25519 public key", fix=fix)
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: {value[:24]!r}... is not a valid ssh-ed25519 public key", fix=fix) from None
    if not isinstance(key, Ed25519PublicKey):  # pragma: no cover - the prefix says ed25519
        raise ConfigError(f"{where}: {value[:24]!r}... is not an ed25519 key", fix=fix)
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted ed25519 private key in OpenSSH or PKCS#8 PEM format."""
    fix = "run `seedbed keygen` to make one, or set backup.signingKey to an unencrypted ed25519 key"
    data = files.read_bytes(path, files.KEY)
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # a passphrase-protected key asks for a password
        raise ConfigError(f"signing key {path} is protected by a passphrase, which seedbed does not support",
                          fix=fix) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"signing key {path} is not an ed25519 private key (OpenSSH or PKCS#8 PEM)",
                          fix=fix) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an ed25519 key", fix=fix)
    return key


def signing_keygen(path: Path) -> str:
    """Write a new ed25519 signing key (OpenSSH format, mode 0600, never over anything); its public line."""
    target = files.check_output(path, "signing key", overwrite=False)
    if target.stream:
        raise ConfigError(f"signing key {path} is not a regular file; a key written there would be lost",
                          fix="choose a file path for the signing key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    files.write_output(target, pem, mode=0o600)
    return public_text(key.public_key())


def trusted_signers(cfg: Config) -> list[str]:
    """backup.trustedSigners, else the public half of the user's own signing key when it exists."""
    if cfg.backup.trusted_signers:
        for value in cfg.backup.trusted_signers:
            parse_public(value)
        return list(cfg.backup.trusted_signers)
    path = default_signing_key_path(cfg)
    if not path.is_file():
        return []
    return [public_text(load_signing_key(path).public_key())]


# --------------------------------------------------------------------------- signing and checking


def sign(index: bytes, key: Ed25519PrivateKey) -> bytes:
    """The ``index.sig`` entry for these exact index.json bytes."""
    import json

    doc = {"format": _FORMAT, "algorithm": "ed25519", "signer": public_text(key.public_key()),
           "signature": base64.b64encode(key.sign(_CONTEXT + index)).decode()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _trust_fix(extra: str = "") -> str:
    return (f"{extra}restore only archives made with your signing key (backup.signingKey); add the "
            f"signer's public key to backup.trustedSigners if you trust it, or pass {SKIP_FLAG} to restore "
            "it anyway after checking where it came from")


def check(index: bytes, signature: bytes | None, trusted: tuple[str, ...], *, name: str = "archive") -> str:
    """The fingerprint of the trusted key that signed ``index``, or an ArchiveError saying why not."""
    if signature is None:
        raise ArchiveError(f"{name} is not signed, so nothing shows who made it (archives made before "
                           "seedbed signed them, or forged with a recipient's public key)",
                           fix=_trust_fix())
    doc = yamlutil.safe_json(signature, what=f"{name}: {SIGNATURE}", error=ArchiveError)
    if not (isinstance(doc, dict) and doc.get("format") == _FORMAT and doc.get("algorithm") == "ed25519"
            and isinstance(doc.get("signer"), str) and isinstance(doc.get("signature"), str)):
        raise ArchiveError(f"{name}: {SIGNATURE} is not a seedbed ed25519 signature", fix=_trust_fix())
    try:
        signer = parse_public(doc["signer"], where=f"{name}: {SIGNATURE} signer")
        raw = base64.b64decode(doc["signature"], validate=True)
    except (ConfigError, ValueError):
        raise ArchiveError(f"{name}: {SIGNATURE} is damaged", fix=_trust_fix()) from None
    if not trusted:
        raise ArchiveError(f"{name} is signed by {fingerprint(signer)}, but no signing key is trusted here "
                           "(no backup.trustedSigners, and no signing key of your own)",
                           fix=_trust_fix("run `seedbed keygen` on the machine that makes backups; "))
    signer_raw = signer.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    match = [t for t in trusted if parse_public(t).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw) == signer_raw]
    if not match:
        raise ArchiveError(f"{name} is signed by {fingerprint(signer)}, which is not a trusted signer "
                           f"(trusted: {', '.join(fingerprint(t) for t in trusted)})", fix=_trust_fix())
    try:
        signer.verify(raw, _CONTEXT + index)
    except InvalidSignature:
        raise ArchiveError(f"{name}: the signature does not match index.json: the archive was altered after "
                           "it was signed", fix="use another backup; " + _trust_fix()) from None
    return fingerprint(signer)
