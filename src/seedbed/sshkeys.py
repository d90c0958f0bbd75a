"""SSH keys: ed25519 generation, OpenSSH public key parsing, ``known_hosts`` lines, fingerprints.

seedbed generates two key pairs itself: the Git server's SSH host key (pinned, so the
``known_hosts`` line is known before any connection) and Flux's deploy key. Both are ed25519.
Public keys the operator gives (authorized keys) are validated here before they reach Gitea,
so that a wrong file fails with a line naming it rather than a 422 from the API.

Nothing here does I/O; key generation draws on the OS random source only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct

import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from .errors import ConfigError

# Key types Gitea and Forgejo accept. DSA is absent on purpose: OpenSSH removed it and Gitea
# disables it by default ([ssh.minimum_key_sizes] DSA = -1).
PUBLIC_KEY_TYPES = frozenset({
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
})

# Gitea's default [ssh.minimum_key_sizes] RSA = 3071 (a 3072-bit key can load as 3071 bits).
# Refusing smaller keys here gives a clear error instead of the API's rejection later.
MIN_RSA_BITS = 3071

_PRIVATE_MARKERS = ("PRIVATE KEY-----", "PuTTY-User-Key-File")


class KeyPair(msgspec.Struct, frozen=True):
    """An SSH key pair in OpenSSH text form. ``repr`` never shows the private half."""

    private_openssh: str
    public_openssh: str

    def __repr__(self) -> str:
        # Spelled out, so that a future field cannot re-expose the private half either.
        return f"KeyPair(public_openssh={self.public_openssh!r}, private_openssh=<redacted>)"

    @classmethod
    def from_private(cls, text: str, *, public: str | None = None, source: str = "the private key") -> KeyPair:
        """The pair for an unencrypted OpenSSH private key (e.g. read back from a Secret).

        ``public`` is the public line stored beside it (the Secrets seedbed writes keep one); it
        must be this key's, and its comment is kept, so a generated pair round-trips exactly.
        """
        data = text.strip().encode()
        if not data:
            raise ConfigError(f"{source}: empty", fix="give an OpenSSH private key (the file ssh-keygen wrote)")
        try:
            key = serialization.load_ssh_private_key(data, password=None)
        except TypeError:
            # cryptography raises TypeError for a passphrase-protected key.
            raise ConfigError(
                f"{source}: the private key is passphrase-protected",
                fix="give an unencrypted key (seedbed stores it only in a cluster Secret)",
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError(
                f"{source}: not an OpenSSH private key",
                fix="give a key in OpenSSH format (ssh-keygen -p -m RFC4716 converts one)",
            ) from None
        derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                serialization.PublicFormat.OpenSSH).decode()
        public_text = derived
        if public is not None and public.strip():
            stored = parse_public_key(public, f"{source} (public half)")
            if stored.split()[:2] != derived.split()[:2]:
                raise ConfigError(f"{source}: the stored public key is not the private key's",
                                  fix="delete the Secret and re-run `seedbed bootstrap` to make a new pair")
            public_text = stored
        return cls(private_openssh=text.strip() + "\n", public_openssh=public_text)


def generate_ed25519(comment: str) -> KeyPair:
    """A fresh ed25519 key pair; ``comment`` ends the public line and is stored in the private key."""
    if any(c in comment for c in "\r\n"):
        raise ConfigError(f"SSH key comment {comment!r} contains a line break", fix="use a one-line comment")
    key = ed25519.Ed25519PrivateKey.generate()
    private_text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(private_openssh=private_text, public_openssh=public.decode() + (f" {comment}" if comment else ""))


def parse_public_keys(text: str, source: str) -> list[str]:
    """Every public key of an authorized_keys or .pub text, normalized to ``type base64 [comment]``.

    Blank lines and ``#`` comments are skipped. authorized_keys options (``restrict,command=...``)
    are dropped: Gitea stores only the key and writes its own forced command for every key.
    """
    if any(marker in text for marker in _PRIVATE_MARKERS):
        raise ConfigError(
            f"{source}: this is a private key; give the .pub file",
            fix=f"point at the public half (usually {source}.pub); never hand out the private key",
        )
    keys: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keys.append(_parse_line(line, f"{source}:{lineno}"))
    if not keys:
        raise ConfigError(
            f"{source}: no SSH public key found (the file is empty)",
            fix="give a file with a line like `ssh-ed25519 AAAA... you@host` (e.g. ~/.ssh/id_ed25519.pub)",
        )
    return keys


def parse_public_key(text: str, source: str) -> str:
    """The one public key of a .pub file (comment lines allowed), normalized to ``type base64 [comment]``."""
    keys = parse_public_keys(text, source)
    if len(keys) > 1:
        raise ConfigError(
            f"{source}: holds {len(keys)} keys where one is expected",
            fix="give a file with a single public key",
        )
    return keys[0]


def known_hosts_line(hosts: list[str], public_openssh: str) -> str:
    """A known_hosts line for ``hosts`` (``host`` or ``host:port``), without the key's comment.

    OpenSSH writes non-22 ports as ``[host]:port``; a bare host means port 22.
    """
    if not hosts:
        raise ConfigError("known_hosts line without host names", fix="name at least one host")
    names = [_known_hosts_name(h) for h in hosts]
    key_type, b64, _ = _split_public(public_openssh, "the host key")
    return f"{','.join(names)} {key_type} {b64}"


def fingerprint(public_openssh: str) -> str:
    """``SHA256:...`` like ``ssh-keygen -l``, of a public key line (validated first)."""
    _, b64, _ = _split_public(public_openssh, "the public key")
    return blob_fingerprint(b64)


def blob_fingerprint(b64: str) -> str:
    """``SHA256:...`` of a key blob in base64: its SHA-256, base64 without padding, as ssh-keygen -l."""
    digest = hashlib.sha256(base64.b64decode(b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# --------------------------------------------------------------------------- internals


def _split_public(public_openssh: str, source: str) -> tuple[str, str, str]:
    """(type, base64, comment) of one validated public key line."""
    normalized = parse_public_key(public_openssh, source)
    key_type, b64, *rest = normalized.split(" ", 2)
    return key_type, b64, rest[0] if rest else ""


def _parse_line(line: str, where: str) -> str:
    tokens = line.split()
    # The key type is the first token that names one; anything before it is authorized_keys options.
    # Options may hold quoted spaces, so search for the type rather than counting fields.
    index = next((i for i, t in enumerate(tokens) if t in PUBLIC_KEY_TYPES or _looks_like_type(t)), None)
    if index is None or index + 1 >= len(tokens):
        raise ConfigError(
            f"{where}: not an SSH public key",
            fix="give a line like `ssh-ed25519 AAAA... you@host` (the contents of a .pub file)",
        )
    key_type, b64 = tokens[index], tokens[index + 1]
    comment = " ".join(tokens[index + 2:])
    if key_type.endswith("-cert-v01@openssh.com"):
        raise ConfigError(f"{where}: an SSH certificate, not a public key", fix="give the plain .pub key")
    if key_type == "ssh-dss":
        raise ConfigError(f"{where}: DSA keys are disabled in Gitea and OpenSSH",
                          fix="make an ed25519 key: ssh-keygen -t ed25519")
    if key_type not in PUBLIC_KEY_TYPES:
        raise ConfigError(f"{where}: unsupported key type {key_type!r}",
                          fix="use ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa or an sk-* key")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the key's base64 is damaged", fix="copy the .pub file again") from None
    inner = _read_string(blob, 0)
    if inner is None or inner[0] != key_type.encode():
        raise ConfigError(f"{where}: the key data does not match its type {key_type!r}",
                          fix="copy the .pub file again; the line was altered")
    try:
        key = serialization.load_ssh_public_key(f"{key_type} {b64}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: not a valid {key_type} key", fix="copy the .pub file again") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ConfigError(
            f"{where}: RSA key of {key.key_size} bits; Gitea requires at least 3072",
            fix="make an ed25519 key: ssh-keygen -t ed25519",
        )
    return f"{key_type} {b64}" + (f" {comment}" if comment else "")


def _looks_like_type(token: str) -> bool:
    # Recognize unsupported-but-real types too, so their error says "unsupported" rather than "garbage".
    return token == "ssh-dss" or token.endswith("@openssh.com") or token.startswith("ecdsa-sha2-")


def _known_hosts_name(host: str) -> str:
    host = host.strip()
    port = 22
    if host.startswith("["):  # [host]:port, or [v6]:port
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", host)
        if not m:
            raise ConfigError(f"bad host {host!r} for known_hosts", fix="write host, host:port or [host]:port")
        host, port = m.group(1), int(m.group(2) or 22)
    elif host.count(":") == 1:
        name, _, port_text = host.partition(":")
        if not port_text.isdigit():
            raise ConfigError(f"bad port in {host!r} for known_hosts", fix="write host:port with a numeric port")
        host, port = name, int(port_text)
    # More than one ':' without brackets is a bare IPv6 address on port 22.
    if not host or re.search(r"[\s,#\[\]]", host):
        raise ConfigError(f"bad host {host!r} for known_hosts", fix="give a DNS name or IP address")
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} out of range for {host}", fix="use a port between 1 and 65535")
    return host if port == 22 else f"[{host}]:{port}"


def _read_string(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    if pos + 4 > len(buf):
        return None
    (length,) = struct.unpack(">I", buf[pos:pos + 4])
    end = pos + 4 + length
    if end > len(buf):
        return None
    return buf[pos + 4:end], end
