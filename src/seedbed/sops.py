"""SOPS decryption keys for Flux: read, checked, put where kustomize-controller looks for them.

People encrypt the Secrets of their GitOps repository with SOPS and let Flux decrypt them:
``spec.decryption: {provider: sops, secretRef: {name: sops-age}}`` on a Flux Kustomization. The
private key is in no repository, so on a new cluster it must be in ``flux-system`` before Flux's
first sync. This module:

- reads the key files named in ``flux.sops`` (through :mod:`seedbed.files`), refuses anything that
  is not an age identity or an armored GPG private key, and registers every key with the scrubber;
- renders the Secret(s) in the format kustomize-controller reads;
- says which Flux Kustomizations of the repository ask for decryption with which Secret, and
  which encrypted files the keys given cannot open.

The Secret format is kustomize-controller's (v1.9.4, bundled with Flux v2.9.3),
``internal/decryptor/decryptor.go`` ``ImportKeys``: every data key ending in ``.agekey`` is parsed
as age identities (several per value, comments allowed), every key ending in ``.asc`` is imported
as an armored OpenPGP key; ``sops.vault-token``, ``sops.aws-kms``, ``sops.azure-kv`` and
``sops.gcp-kms`` are cloud credentials seedbed does not handle. The names ``sops-age``/``sops-gpg``
and the keys ``age.agekey``/``sops.asc`` are the ones Flux's SOPS guide uses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from . import files, scrub, yamlutil
from .errors import ConfigError, SeedbedError

if TYPE_CHECKING:
    from .config import Config
    from .fluxrepo import Repo

NAMESPACE = "flux-system"
PROVIDER = "sops"
AGE_KEY = "age.agekey"  # decryptor.go DecryptionAgeExt = ".agekey"
GPG_KEY = "sops.asc"  # decryptor.go DecryptionPGPExt = ".asc"
KEY_EXTENSIONS = (".agekey", ".asc")
REDACTED = "<redacted>"

_AGE_IDENTITY = re.compile(r"AGE-SECRET-KEY-" r"1[0-9A-Z]+")  # split: secret scanners grep for it
_ARMOR = re.compile(r"-----BEGIN PGP (PRIVATE|PUBLIC) KEY BLOCK-----(.*?)-----END PGP \1 KEY BLOCK-----", re.S)


class Keys(msgspec.Struct, frozen=True):
    """The keys of ``flux.sops``, read and checked. Private values live only here and in the cluster."""

    age_identities: tuple[str, ...] = ()
    age_recipients: tuple[str, ...] = ()  # the public halves (age1...), which .sops.yaml names
    gpg_keys: tuple[str, ...] = ()  # armored private key blocks
    gpg_fingerprints: frozenset[str] = frozenset()  # upper-case hex, primary keys and subkeys
    # Secrets of flux.sops whose key files are not on this machine but which the verified --restore
    # archive carries: the restore puts them back before the sync, so seedbed neither reads nor writes them.
    from_backup: frozenset[str] = frozenset()

    @property
    def public(self) -> dict[str, list[str]]:
        """What identifies the keys without revealing them (the step's inputs, the plan's notes)."""
        return {"age": list(self.age_recipients), "pgp": sorted(self.gpg_fingerprints)}


def load(cfg: Config, *, archived: frozenset[tuple[str, str]] = frozenset()) -> Keys | None:
    """The keys ``flux.sops`` names, or None without that section. A file that is not a key is a
    ConfigError naming it, before anything is written.

    ``archived`` is the (namespace, name) of every Secret a verified ``--restore`` archive carries: a
    Secret whose key files are missing here but which the archive carries comes from the backup (a
    rebuild from another machine needs the archive and its identity, not the SOPS key files too)."""
    conf = cfg.flux.sops
    if conf is None:
        return None
    wanted = {conf.age_secret: list(conf.age_key_files)}
    wanted.setdefault(conf.gpg_secret, []).extend(conf.gpg_key_files)
    from_backup = frozenset(name for name, paths in wanted.items()
                            if paths and (NAMESPACE, name) in archived
                            and any(not os.path.lexists(cfg.resolve(p)) for p in paths))
    identities: list[str] = []
    recipients: list[str] = []
    for name in conf.age_key_files if conf.age_secret not in from_backup else ():
        for identity in _age_identities(cfg.resolve(name), name):
            identities.append(identity)
            recipients.append(_age_public(identity, name))
    blocks: list[str] = []
    fingerprints: set[str] = set()
    for name in conf.gpg_key_files if conf.gpg_secret not in from_backup else ():
        block, fprs = _gpg_private(cfg.resolve(name), name)
        blocks.append(block)
        fingerprints |= fprs
    return Keys(tuple(identities), tuple(recipients), tuple(blocks), frozenset(fingerprints), from_backup)


def _age_identities(path: Path, name: str) -> list[str]:
    text = files.read_text(path, files.KEY)
    scrub.secret(text)
    found: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not _AGE_IDENTITY.fullmatch(line):
            what = "an age public key (age1...)" if line.startswith("age1") else "not an age identity"
            raise ConfigError(f"flux.sops.ageKeyFiles: {name}:{n}: {what}",
                              fix="give the age identity file (lines AGE-SECRET-KEY-" "1..., as age-keygen writes "
                                  "it; sops reads it from ~/.config/sops/age/keys.txt)")
        scrub.secret(line)
        found.append(line)
    if not found:
        raise ConfigError(f"flux.sops.ageKeyFiles: {name} holds no age identity (AGE-SECRET-KEY-" "1...)",
                          fix="give the age identity file sops decrypts your files with")
    return found


def _age_public(identity: str, name: str) -> str:
    import pyrage

    try:
        return str(pyrage.x25519.Identity.from_str(identity).to_public())
    except pyrage.IdentityError:
        raise ConfigError(f"flux.sops.ageKeyFiles: {name}: an AGE-SECRET-KEY-" "1 line is damaged (not valid bech32)",
                          fix="copy the identity file again from where you keep it") from None


def _gpg_private(path: Path, name: str) -> tuple[str, set[str]]:
    text = files.read_text(path, files.KEY)
    scrub.secret(text)
    m = _ARMOR.search(text)
    if m is None:
        raise ConfigError(f"flux.sops.gpgKeyFiles: {name} is not an armored GPG key",
                          fix="export it with `gpg --export-secret-keys --armor FINGERPRINT > FILE`")
    if m.group(1) == "PUBLIC":
        raise ConfigError(f"flux.sops.gpgKeyFiles: {name} is a public key: Flux needs the private key to decrypt",
                          fix="export it with `gpg --export-secret-keys --armor FINGERPRINT > FILE`")
    try:
        packets = _dearmor(m.group(2))
        fingerprints, private = _fingerprints(packets)
    except (ValueError, IndexError, binascii.Error):
        raise ConfigError(f"flux.sops.gpgKeyFiles: {name} is damaged (its OpenPGP packets do not parse)",
                          fix="export it again with `gpg --export-secret-keys --armor FINGERPRINT`") from None
    if not private:
        raise ConfigError(f"flux.sops.gpgKeyFiles: {name} holds no secret key packet",
                          fix="export it with `gpg --export-secret-keys --armor FINGERPRINT > FILE`")
    return m.group(0) + "\n", fingerprints


def _dearmor(body: str) -> bytes:
    lines = body.strip().splitlines()
    if any(":" in ln for ln in lines[:10]):  # armor headers (Version: ...) end at the first blank line
        lines = lines[lines.index("") + 1:] if "" in lines else lines
    data = "".join(ln.strip() for ln in lines if ln.strip() and not ln.startswith("="))
    return base64.b64decode(data, validate=True)


def _fingerprints(data: bytes) -> tuple[set[str], bool]:
    """Version 4 key fingerprints (RFC 4880 12.2: SHA-1 of 0x99, a two-octet length and the public
    key packet body) of every primary key and subkey, and whether a secret key packet is there."""
    out: set[str] = set()
    private = False
    i = 0
    while i < len(data):
        head = data[i]
        if not head & 0x80:
            raise ValueError("not an OpenPGP packet")
        if head & 0x40:  # new format
            tag, i = head & 0x3F, i + 1
            first = data[i]
            if first < 192:
                length, i = first, i + 1
            elif first < 224:
                length, i = ((first - 192) << 8) + data[i + 1] + 192, i + 2
            elif first == 255:
                length, i = int.from_bytes(data[i + 1:i + 5], "big"), i + 5
            else:
                break  # partial lengths are for data packets, after the keys
        else:
            tag, kind = (head >> 2) & 0x0F, head & 0x03
            if kind == 3:
                length, i = len(data) - i - 1, i + 1
            else:
                size = (1, 2, 4)[kind]
                length, i = int.from_bytes(data[i + 1:i + 1 + size], "big"), i + 1 + size
        body = data[i:i + length]
        i += length
        if tag in (5, 7):
            private = True
        if tag in (5, 6, 7, 14) and body[:1] == b"\x04":
            public = body[:_public_length(body)]
            out.add(hashlib.sha1(b"\x99" + len(public).to_bytes(2, "big") + public,
                                 usedforsecurity=False).hexdigest().upper())
    return out, private


def _public_length(body: bytes) -> int:
    """How much of a v4 key packet is the public key: version, time, algorithm, the algorithm's fields."""
    pos, algo = 6, body[5]

    def mpi(p: int) -> int:
        return p + 2 + (int.from_bytes(body[p:p + 2], "big") + 7) // 8

    def oid(p: int) -> int:
        return p + 1 + body[p]

    if algo in (1, 2, 3):
        pos = mpi(mpi(pos))
    elif algo == 16:
        pos = mpi(mpi(mpi(pos)))
    elif algo == 17:
        pos = mpi(mpi(mpi(mpi(pos))))
    elif algo in (19, 22):
        pos = mpi(oid(pos))
    elif algo == 18:
        pos = mpi(oid(pos))
        pos += 1 + body[pos]
    elif algo in (25, 26, 27, 28):  # X25519, X448, Ed25519, Ed448 (RFC 9580): fixed-size keys
        pos += {25: 32, 26: 56, 27: 32, 28: 57}[algo]
    else:
        raise ValueError(f"public key algorithm {algo}")
    if pos > len(body):
        raise ValueError("truncated key packet")
    return pos


# --------------------------------------------------------------------------- the cluster side


def secret_names(cfg: Config) -> set[str]:
    """The decryption Secrets seedbed creates in flux-system."""
    conf = cfg.flux.sops
    if conf is None:
        return set()
    return {*([conf.age_secret] if conf.age_key_files else []), *([conf.gpg_secret] if conf.gpg_key_files else [])}


def root_decryption(cfg: Config) -> dict[str, Any] | None:
    """``spec.decryption`` of the flux-system Kustomization, when ``flux.sops.decryptRoot``."""
    conf = cfg.flux.sops
    if conf is None or not conf.decrypt_root:
        return None
    name = conf.age_secret if conf.age_key_files else conf.gpg_secret
    return {"provider": PROVIDER, "secretRef": {"name": name}}


def secrets(cfg: Config, keys: Keys | None, *, redact: bool = False) -> list[dict[str, Any]]:
    """The decryption Secret(s) seedbed writes, as kustomize-controller reads them; with ``redact``
    (a plan), the same objects with every value ``<redacted>``. Those the backup brings are left out."""
    from .render import MANAGED_BY, b64

    conf = cfg.flux.sops
    if conf is None or keys is None:
        return []
    plain = None if redact else keys
    data: dict[str, dict[str, str]] = {}
    if conf.age_key_files:
        value = "\n".join(keys.age_identities) + "\n" if plain else REDACTED
        data.setdefault(conf.age_secret, {})[AGE_KEY] = value
    if conf.gpg_key_files:
        blocks = list(keys.gpg_keys) if plain else [REDACTED] * len(conf.gpg_key_files)
        for i, block in enumerate(blocks):
            data.setdefault(conf.gpg_secret, {})[GPG_KEY if i == 0 else f"sops-{i + 1}.asc"] = block
    return [{
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
        "type": "Opaque",
        "data": {k: (v if plain is None else b64(v)) for k, v in values.items()},
    } for name, values in sorted(data.items()) if name not in keys.from_backup]


def is_decryption_secret(obj: dict[str, Any]) -> bool:
    """A Secret in flux-system holding keys kustomize-controller imports (``*.agekey``, ``*.asc``)."""
    md = obj.get("metadata") or {}
    return md.get("namespace") == NAMESPACE and any(
        str(k).endswith(KEY_EXTENSIONS) for k in (obj.get("data") or {}))


# --------------------------------------------------------------------------- the repository side


class Findings(msgspec.Struct, frozen=True):
    notes: list[str]
    errors: list[str]
    warnings: list[str]


def check_repo(repo: Repo, cfg: Config, keys: Keys | None, *,
               archived: frozenset[tuple[str, str]] | None = None) -> Findings:
    """Which Flux Kustomizations ask for decryption, with which Secret; the requests neither seedbed
    nor the ``--restore`` archive (``archived``: the Secrets it carries; None when not restoring) can
    satisfy; encrypted files the keys given cannot open; ``.sops.yaml`` rules for other keys."""
    from .fluxrepo import FLUX_KUSTOMIZE_API

    notes: list[str] = []
    errors: list[str] = []
    warnings: list[str] = []
    ours = secret_names(cfg)
    # Keys that came from the backup are not known before the restore: only files are checked.
    read = keys if keys is not None and not keys.from_backup else None
    decrypting: dict[tuple[str, str], str | None] = {}  # Kustomization -> its Secret (None: controller keys)
    root = root_decryption(cfg)
    for obj in repo.objects:
        if obj.kind != "Kustomization" or not obj.api.startswith(FLUX_KUSTOMIZE_API):
            continue
        dec = (obj.data.get("spec") or {}).get("decryption")
        ns = obj.namespace or NAMESPACE
        if obj.name == "flux-system" and ns == NAMESPACE and not isinstance(dec, dict) and root:
            dec = root  # seedbed gives the cluster's own sync its decryption
        if not isinstance(dec, dict) or dec.get("provider") != PROVIDER:
            continue
        secret = ((dec.get("secretRef") or {}).get("name")) if isinstance(dec.get("secretRef"), dict) else None
        decrypting[(ns, obj.name)] = str(secret) if secret else None
        where = f"{obj.file}: " if obj.file else ""
        if not secret:
            notes.append(f"{where}Kustomization {ns}/{obj.name} decrypts with the controller's own keys (no secretRef)")
            continue
        notes.append(f"{where}Kustomization {ns}/{obj.name} decrypts with Secret {ns}/{secret}")
        if ns == NAMESPACE and secret in ours:
            continue
        if archived is not None and (ns, secret) in archived:
            notes.append(f"{where}Secret {ns}/{secret} comes from the backup being restored, before the sync")
        elif archived is not None:
            errors.append(f"{where}Kustomization {ns}/{obj.name} decrypts with Secret {ns}/{secret}, which neither "
                          "seedbed nor the backup being restored carries: Flux would fail to apply it")
        else:
            errors.append(f"{where}Kustomization {ns}/{obj.name} decrypts with Secret {ns}/{secret}, which seedbed "
                          "will not create: Flux would fail to apply it")
    unopened: list[str] = []
    for obj in repo.objects:
        if not obj.encrypted:
            continue
        ks = obj.applied_by
        if (ks.namespace, ks.name) not in decrypting and not (ks.file == "" and root):
            errors.append(f"{obj.file}: SOPS-encrypted, but Kustomization {ks.ref} that applies it has no "
                          "spec.decryption: Flux would apply it still encrypted, and the API server refuses it")
            continue
        if read is not None and not _opens(obj.data.get("sops"), read) and obj.file not in unopened:
            unopened.append(obj.file)
    if unopened:
        errors.append(f"the SOPS key(s) of flux.sops cannot decrypt {', '.join(unopened)}: none of their "
                      "recipients is " + _described(read))
    if read is not None:
        warnings += _creation_rules(repo.tree, read)
    return Findings(notes, errors, warnings)


def _described(keys: Keys | None) -> str:
    if keys is None:
        return "given"
    return ", ".join([*keys.age_recipients, *(f"GPG {f}" for f in sorted(keys.gpg_fingerprints))])


def _recipients(meta: Any) -> tuple[set[str], set[str], bool]:
    """age recipients, PGP fingerprints, and whether other kinds of key (KMS, Vault...) are listed."""
    age: set[str] = set()
    pgp: set[str] = set()
    other = False
    groups = [meta, *((meta or {}).get("key_groups") or [])] if isinstance(meta, dict) else []
    for group in groups:
        if not isinstance(group, dict):
            continue
        for key, value in group.items():
            entries = value if isinstance(value, list) else [value] if isinstance(value, str) else []
            for entry in entries:
                if key == "age":
                    age |= {r.strip() for r in (entry.get("recipient", "") if isinstance(entry, dict) else
                                                 str(entry)).split(",") if r.strip()}
                elif key == "pgp":
                    pgp |= {f.strip().upper().replace(" ", "") for f in (entry.get("fp", "") if isinstance(entry, dict)
                                                                          else str(entry)).split(",") if f.strip()}
                elif key in {"kms", "gcp_kms", "azure_kv", "hc_vault", "hc_vault_transit_uri"} and entry:
                    other = True
    return age, pgp, other


def _opens(meta: Any, keys: Keys) -> bool:
    age, pgp, other = _recipients(meta)
    # A GPG recipient may be named by a long key id (the fingerprint's tail) as well as in full.
    return other or bool(age & set(keys.age_recipients)) or any(
        f.endswith(p) for p in pgp for f in keys.gpg_fingerprints if len(p) >= 16)


def _creation_rules(tree: Path, keys: Keys) -> list[str]:
    """``.sops.yaml`` rules that encrypt to none of the keys: files sops writes by them later would
    not open on the cluster."""
    path = tree / ".sops.yaml"
    if not path.is_file():
        return []
    try:
        doc = yamlutil.safe_load(files.read_text(path, files.REPO_FILE), what=".sops.yaml")
    except SeedbedError as e:
        return [f".sops.yaml: cannot be read ({e.message}); its recipients are not checked"]
    rules = doc.get("creation_rules") if isinstance(doc, dict) else None
    out = []
    for i, rule in enumerate(rules if isinstance(rules, list) else [], 1):
        if not isinstance(rule, dict):
            continue
        age, pgp, _ = _recipients(rule)
        if (age or pgp) and not _opens(rule, keys):
            where = f"path_regex {rule['path_regex']!r}" if rule.get("path_regex") else f"rule {i}"
            out.append(f".sops.yaml: creation rule {where} encrypts to "
                       f"{', '.join(sorted(age | pgp))}, none of which is a key of flux.sops: files it encrypts "
                       "will not decrypt on the cluster")
    return out
