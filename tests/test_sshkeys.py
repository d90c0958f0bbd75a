"""sshkeys: generation, parsing and known_hosts, checked against the real ssh-keygen where present."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from seedbed.errors import ConfigError, SeedbedError
from seedbed.sshkeys import (
    KeyPair,
    fingerprint,
    generate_ed25519,
    known_hosts_line,
    parse_public_key,
    parse_public_keys,
)

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen (openssh-client) not installed")


def _write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)  # ssh-keygen refuses group/world-readable private keys
    return path


def _ssh_keygen(*args: str) -> str:
    assert SSH_KEYGEN
    return subprocess.run([SSH_KEYGEN, *args], check=True, capture_output=True, text=True).stdout


# --------------------------------------------------------------------------- generation


def test_generate_shapes() -> None:
    kp = generate_ed25519("flux@homelab")
    assert kp.private_openssh.startswith("-----BEGIN OPENSSH " "PRIVATE KEY-----\n")
    assert kp.private_openssh.endswith("-----END OPENSSH PRIVATE KEY-----\n")
    kind, b64, comment = kp.public_openssh.split(" ")
    assert (kind, comment) == ("ssh-ed25519", "flux@homelab")
    assert b64.startswith("AAAAC3NzaC1lZDI1NTE5")
    assert generate_ed25519("x") != generate_ed25519("x")


def test_repr_and_str_hide_private_key() -> None:
    kp = generate_ed25519("host")
    body = kp.private_openssh.splitlines()[1]
    for text in (repr(kp), str(kp), f"{kp}", repr([kp]), repr({"k": kp})):
        assert "PRIVATE KEY" not in text
        assert body not in text
    assert kp.public_openssh in repr(kp)


def test_loads_with_cryptography_and_matches_public() -> None:
    kp = generate_ed25519("c")
    key = serialization.load_ssh_private_key(kp.private_openssh.encode(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert kp.public_openssh == public.decode() + " c"


def test_from_private_round_trip_with_the_stored_public_half() -> None:
    kp = generate_ed25519("gitea-ssh.gitea")
    assert KeyPair.from_private(kp.private_openssh, public=kp.public_openssh) == kp
    assert KeyPair.from_private("\n" + kp.private_openssh + "\n\n", public=kp.public_openssh + "\n") == kp
    # Without it, the same key without a comment.
    assert KeyPair.from_private(kp.private_openssh).public_openssh == kp.public_openssh.rsplit(" ", 1)[0]


def test_a_stored_public_half_of_another_key_is_refused() -> None:
    kp, other = generate_ed25519("a"), generate_ed25519("b")
    with pytest.raises(ConfigError, match="not the private key's"):
        KeyPair.from_private(kp.private_openssh, public=other.public_openssh, source="Secret gitea/x")


def test_from_private_no_comment() -> None:
    kp = generate_ed25519("")
    assert kp.public_openssh.count(" ") == 1
    assert KeyPair.from_private(kp.private_openssh) == kp


@pytest.mark.parametrize("text", ["", "garbage", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH8z3yAcOgTJOHkgVcEtB27+pyONvl9Re7PXFGbrJFeX"])
def test_from_private_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as e:
        KeyPair.from_private(text, source="Secret flux-system/flux-system")
    assert "Secret flux-system/flux-system" in str(e.value)
    assert e.value.fix


def test_comment_with_newline_rejected() -> None:
    with pytest.raises(ConfigError):
        generate_ed25519("a\nb")


@needs_ssh_keygen
def test_ssh_keygen_agrees(tmp_path: Path) -> None:
    kp = generate_ed25519("seedbed@test")
    key = _write_private(tmp_path / "id", kp.private_openssh)
    # -y derives the public key from our private file: the same key (the comment lives in the .pub).
    assert _ssh_keygen("-y", "-f", str(key)).split()[:2] == kp.public_openssh.split()[:2]
    listed = _ssh_keygen("-l", "-f", str(key)).split()
    assert listed[0] == "256"
    assert listed[1] == fingerprint(kp.public_openssh)
    (tmp_path / "id.pub").write_text(kp.public_openssh + "\n")
    assert _ssh_keygen("-l", "-f", str(tmp_path / "id.pub")).split()[1] == fingerprint(kp.public_openssh)


@needs_ssh_keygen
def test_from_private_reads_ssh_keygen_keys(tmp_path: Path) -> None:
    for kind, extra in (("ed25519", []), ("ecdsa", []), ("rsa", ["-b", "3072"])):
        path = tmp_path / f"id_{kind}"
        subprocess.run([SSH_KEYGEN, "-q", "-t", kind, *extra, "-N", "", "-C", f"me@{kind}", "-f", str(path)],
                       check=True)
        kp = KeyPair.from_private(path.read_text(), public=Path(f"{path}.pub").read_text())
        assert kp.public_openssh == Path(f"{path}.pub").read_text().strip()


@needs_ssh_keygen
def test_from_private_refuses_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "enc"
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "secret", "-f", str(path)], check=True)
    with pytest.raises(ConfigError, match="passphrase"):
        KeyPair.from_private(path.read_text())


# --------------------------------------------------------------------------- parsing


def test_parse_public_key_normalizes() -> None:
    kp = generate_ed25519("me@laptop")
    kind, b64, _ = kp.public_openssh.split()
    text = f"# my key\n\n  {kind}   {b64}   me@laptop  \n"
    assert parse_public_key(text, "id.pub") == kp.public_openssh
    assert parse_public_key(f"{kind} {b64}", "id.pub") == f"{kind} {b64}"
    # Options of an authorized_keys line are dropped; comments with spaces are kept.
    line = f'restrict,command="echo hi there" {kind} {b64} work laptop'
    assert parse_public_key(line, "authorized_keys") == f"{kind} {b64} work laptop"


def _public(key: object) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()  # type: ignore[attr-defined]


def test_parse_other_key_types() -> None:
    ecdsa = _public(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert parse_public_key(ecdsa + " e", "e.pub") == ecdsa + " e"
    ecdsa384 = _public(ec.generate_private_key(ec.SECP384R1()).public_key())
    assert parse_public_key(ecdsa384, "e.pub").startswith("ecdsa-sha2-nistp384 ")
    big = _public(rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key())
    assert parse_public_key(big, "r.pub").startswith("ssh-rsa ")


def test_parse_sk_key() -> None:
    # A FIDO (sk-) ed25519 key as ssh-keygen -t ed25519-sk writes it (no hardware needed to parse).
    import base64
    import struct

    def s(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    blob = s(b"sk-ssh-ed25519@openssh.com") + s(bytes(range(32))) + s(b"ssh:")
    line = "sk-ssh-ed25519@openssh.com " + base64.b64encode(blob).decode() + " yubikey"
    assert parse_public_key(line, "sk.pub") == line


def test_small_rsa_rejected() -> None:
    small = _public(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    with pytest.raises(ConfigError, match="2048 bits"):
        parse_public_key(small, "old.pub")


def test_parse_many() -> None:
    a, b = generate_ed25519("a").public_openssh, generate_ed25519("b").public_openssh
    assert parse_public_keys(f"{a}\n# note\n{b}\n", "authorized_keys") == [a, b]
    with pytest.raises(ConfigError, match="2 keys"):
        parse_public_key(f"{a}\n{b}\n", "two.pub")


def test_private_key_given_as_public() -> None:
    kp = generate_ed25519("x")
    with pytest.raises(ConfigError) as e:
        parse_public_key(kp.private_openssh, "~/.ssh/id_ed25519")
    assert "~/.ssh/id_ed25519" in str(e.value)
    assert "this is a private key; give the .pub file" in str(e.value)
    assert e.value.fix
    # The private key's content never appears in the error.
    assert kp.private_openssh.splitlines()[1] not in str(e.value) + str(e.value.fix)
    # PEM private keys too.
    with pytest.raises(ConfigError, match="private key"):
        parse_public_keys("-----BEGIN RSA " "PRIVATE KEY-----\nabc\n-----END RSA " "PRIVATE KEY-----\n", "id_rsa")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty(text: str) -> None:
    with pytest.raises(ConfigError, match=r"keys\.pub: no SSH public key found") as e:
        parse_public_key(text, "keys.pub")
    assert e.value.fix


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("hello world", "not an SSH public key"),
        ("ssh-ed25519", "not an SSH public key"),
        ("ssh-ed25519 not-base64!!", "base64"),
        ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAAAgQC", "base64"),
        ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==", "does not match"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAAQA=", "not a valid"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "DSA"),
        ("ssh-ed25519-cert-v01@openssh.com AAAA", "certificate"),
        ("ecdsa-sha2-nistp999 AAAA", "unsupported key type"),
    ],
)
def test_garbage(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as e:
        parse_public_key(text, "bad.pub")
    assert str(e.value).startswith("bad.pub:1:")
    assert isinstance(e.value, SeedbedError) and e.value.fix


# --------------------------------------------------------------------------- known_hosts


def test_known_hosts_line_format() -> None:
    kp = generate_ed25519("comment is dropped")
    kind, b64, *_ = kp.public_openssh.split()
    line = known_hosts_line(["gitea-ssh.gitea.svc.cluster.local", "gitea-ssh.gitea"], kp.public_openssh)
    assert line == f"gitea-ssh.gitea.svc.cluster.local,gitea-ssh.gitea {kind} {b64}"
    assert known_hosts_line(["h:22"], kp.public_openssh) == f"h {kind} {b64}"
    assert known_hosts_line(["h:2222"], kp.public_openssh) == f"[h]:2222 {kind} {b64}"
    assert known_hosts_line(["[h]:2222"], kp.public_openssh) == f"[h]:2222 {kind} {b64}"
    assert known_hosts_line(["::1"], kp.public_openssh) == f"::1 {kind} {b64}"
    assert known_hosts_line(["[::1]:2200"], kp.public_openssh) == f"[::1]:2200 {kind} {b64}"


@pytest.mark.parametrize("hosts", [[], [""], ["a b"], ["a,b"], ["h:x"], ["h:0"], ["h:70000"], ["[h"]])
def test_known_hosts_bad_hosts(hosts: list[str]) -> None:
    with pytest.raises(ConfigError):
        known_hosts_line(hosts, generate_ed25519("x").public_openssh)


def test_known_hosts_bad_key() -> None:
    with pytest.raises(ConfigError):
        known_hosts_line(["h"], "not a key")


@needs_ssh_keygen
def test_known_hosts_with_ssh_keygen(tmp_path: Path) -> None:
    kp = generate_ed25519("host")
    hosts = ["gitea-ssh.gitea.svc.cluster.local", "gitea-ssh.gitea", "other:2222"]
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts_line(hosts, kp.public_openssh) + "\n")
    for host in ("gitea-ssh.gitea.svc.cluster.local", "gitea-ssh.gitea", "[other]:2222"):
        found = _ssh_keygen("-F", host, "-f", str(path))
        assert kp.public_openssh.split()[1] in found
    # ssh-keygen -F exits 1 when a host is absent.
    absent = subprocess.run([SSH_KEYGEN, "-F", "other", "-f", str(path)], capture_output=True)
    assert absent.returncode == 1
    listed = _ssh_keygen("-l", "-f", str(path))
    assert fingerprint(kp.public_openssh) in listed


def test_fingerprint_known_vector() -> None:
    # Computed with ssh-keygen -l on this public key (OpenSSH 9.2).
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFeXOYwm04/UBzKqJhz4RLmugwIpA3ug90mSkbeJlJif me@host"
    assert fingerprint(pub) == "SHA256:AxvjQnZxIhyVzBzrcvKthtWvqexmZLduEqDoynO+Ij8"
