"""Longhorn: the upstream release manifest, with seedbed's few deploy-time settings written into it.

Pure: the manifest text and the (already read) backup credentials come in, objects go out.

Longhorn reads its deploy-time settings from YAML documents embedded as strings in three
ConfigMaps. We change only the keys seedbed owns and keep every other line of those
documents exactly as upstream wrote it, so a diff against the release manifest shows only
our settings:

- ``longhorn-default-setting`` / ``default-setting.yaml``: ``default-data-path``; on releases
  without ``longhorn-default-resource`` (before v1.8) also ``backup-target`` and
  ``backup-target-credential-secret``.
- ``longhorn-default-resource`` / ``default-resource.yaml`` (v1.8 and later): the backup target,
  which became a BackupTarget resource there.
- ``longhorn-storageclass`` / ``storageclass.yaml``: the default-class annotation and
  ``numberOfReplicas``. longhorn-manager creates the ``longhorn`` StorageClass from it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import yaml

from .. import images, yamlutil
from ..config import SECRET_KEY, BackupCredentials, LonghornConfig
from ..errors import ConfigError, ManifestError, Refused

NAMESPACE = "longhorn-system"
STORAGE_CLASS = "longhorn"
VERSION_LABEL = "app.kubernetes.io/version"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
# Kubernetes still honours the pre-GA annotation; a class carrying it is a default too.
BETA_DEFAULT_CLASS_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"

SETTING_CONFIGMAP = ("longhorn-default-setting", "default-setting.yaml")
RESOURCE_CONFIGMAP = ("longhorn-default-resource", "default-resource.yaml")
STORAGECLASS_CONFIGMAP = ("longhorn-storageclass", "storageclass.yaml")

# What the step waits for, in the order it reports them.
ROLLOUTS: tuple[tuple[str, str], ...] = (
    ("DaemonSet", "longhorn-manager"),
    ("Deployment", "longhorn-driver-deployer"),
    ("Deployment", "longhorn-ui"),
)

# Shown in place of credential values wherever a rendering is for display (plan).
REDACTED = "<redacted>"

ENV_LINE = re.compile(r"^(?:export\s+)?([-._a-zA-Z0-9]+)\s*=(.*)$")
RELEASE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


# --------------------------------------------------------------------------- validation


def parse_credentials_file(text: str, name: str) -> dict[str, str]:
    """KEY=VALUE lines (``#`` comments, blank lines and ``export`` allowed) -> dict.

    Errors name the file and line but never echo the line: it may hold a secret.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = ENV_LINE.match(line)
        if not m:
            raise ConfigError(
                f"{name}:{number}: not a KEY=VALUE line (the line is not shown: it may hold a secret)",
                fix="write one KEY=VALUE per line, e.g. AWS_ACCESS_KEY_ID=...",
            )
        key, value = m.group(1), m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    if not values:
        raise ConfigError(f"{name}: no KEY=VALUE lines found",
                          fix="put the backup target's credentials in it, e.g. AWS_ACCESS_KEY_ID=...")
    return values


def release_tuple(version: str | None) -> tuple[int, int, int] | None:
    m = RELEASE.match(version or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


# --------------------------------------------------------------------------- embedded YAML


def set_top_level_keys(text: str, updates: Mapping[str, Any]) -> str:
    """``text`` (a YAML mapping) with ``updates`` set, every other line kept byte for byte.

    Keys already present keep their place; new keys go at the end. If the document is not a
    plain block mapping, it is re-dumped whole (same parsed values, same key order).
    """
    if not updates:
        return text
    original = yamlutil.load(text) if text.strip() else {}
    if original is None:
        original = {}
    if not isinstance(original, dict):
        raise ManifestError(f"expected a YAML mapping of settings, found {type(original).__name__}")
    expected = {**original, **updates}
    root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    if root is not None and (not isinstance(root, yaml.MappingNode) or root.flow_style):
        return _redump(expected, text)

    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    spans: dict[str, list[tuple[int, int]]] = {}
    for key_node, value_node in root.value if root is not None else []:
        start = key_node.start_mark.line
        end_mark = value_node.end_mark
        end = end_mark.line + (1 if end_mark.column > 0 else 0)
        spans.setdefault(str(key_node.value), []).append((start, max(end, start + 1)))

    edits: list[tuple[int, int, str]] = []
    appended: list[str] = []
    for key, value in updates.items():
        line = yamlutil.dump({key: value})
        if key in spans:
            first, *duplicates = spans[key]
            edits.append((first[0], first[1], line))
            edits.extend((s, e, "") for s, e in duplicates)
        else:
            appended.append(line)
    for start, end, replacement in sorted(edits, reverse=True):
        lines[start:end] = [replacement] if replacement else []
    result = "".join(lines) + "".join(appended)
    if not text.endswith("\n"):
        result = result.rstrip("\n")  # keep upstream's `|-` (no final newline) style

    # The splice relies on line positions; prove it produced exactly the intended mapping.
    reparsed = yamlutil.load(result) if result.strip() else {}
    if not isinstance(reparsed, dict) or list(reparsed.items()) != list(expected.items()):
        return _redump(expected, text)
    return result


def _redump(data: dict[str, Any], like: str) -> str:
    out = yamlutil.dump(data)
    return out if like.endswith("\n") else out.rstrip("\n")


def _edit_document(text: str, mutate: Callable[[dict[str, Any]], None], what: str) -> str:
    """Apply ``mutate`` to a parsed nested document; keep the original text when nothing changed."""
    try:
        data = yamlutil.load(text)
    except yaml.YAMLError as e:
        raise ManifestError(f"{what} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{what} is not a YAML mapping")
    before = yamlutil.dump(data)
    mutate(data)
    if yamlutil.dump(data) == before:
        return text
    return _redump(data, text)


# --------------------------------------------------------------------------- manifest


class Layout(msgspec.Struct, frozen=True):
    """What a Longhorn manifest offers, found by looking rather than by version number."""

    version: str | None
    has_default_resource: bool
    storageclass_in_configmap: bool


def _find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    for obj in objs:
        if obj.get("kind") == kind and (obj.get("metadata") or {}).get("name") == name:
            return obj
    return None


def daemonset_version(ds: Mapping[str, Any]) -> str | None:
    """The Longhorn version of a longhorn-manager DaemonSet: its version label, else its image tag."""
    labels = (ds.get("metadata") or {}).get("labels") or {}
    if labels.get(VERSION_LABEL):
        return str(labels[VERSION_LABEL])
    containers = ((((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")) or []
    for c in containers:
        if c.get("name") == "longhorn-manager" and c.get("image"):
            return images.parse(str(c["image"])).tag
    return None


def inspect(objs: list[dict[str, Any]]) -> Layout:
    """Check a parsed manifest has what seedbed edits and waits for; describe its layout."""
    missing = [f"ConfigMap {SETTING_CONFIGMAP[0]}"] if _find(objs, "ConfigMap", SETTING_CONFIGMAP[0]) is None else []
    missing += [f"{kind} {name}" for kind, name in ROLLOUTS if _find(objs, kind, name) is None]
    sc_cm = _find(objs, "ConfigMap", STORAGECLASS_CONFIGMAP[0]) is not None
    if not sc_cm and _find(objs, "StorageClass", STORAGE_CLASS) is None:
        missing.append(f"ConfigMap {STORAGECLASS_CONFIGMAP[0]} (or StorageClass {STORAGE_CLASS})")
    if missing:
        raise ManifestError(
            "the Longhorn manifest lacks " + ", ".join(missing) + "; is it Longhorn's deploy/longhorn.yaml?",
            fix="use the release manifest (longhorn.yaml from the Longhorn release) for longhorn.version",
        )
    ds = _find(objs, "DaemonSet", "longhorn-manager")
    return Layout(
        version=daemonset_version(ds) if ds else None,
        has_default_resource=_find(objs, "ConfigMap", RESOURCE_CONFIGMAP[0]) is not None,
        storageclass_in_configmap=sc_cm,
    )


def _configmap_doc(cm: dict[str, Any], key: str) -> str:
    data = cm.setdefault("data", {})
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ManifestError(f"ConfigMap {cm['metadata']['name']}: data.{key} is not a string")
    return value


def credentials_secret(creds: BackupCredentials, values: Mapping[str, str] | None, *,
                       redact: bool) -> dict[str, Any]:
    """The backup target's credential Secret. With ``redact``, values are replaced by ``<redacted>``
    (not valid base64, so a redacted rendering can never be applied by mistake)."""
    data: dict[str, str] = {}
    for key, value in (values or {}).items():
        if not SECRET_KEY.match(key):
            raise ConfigError(
                f"longhorn.backupCredentials: {key!r} is not a valid Secret key (letters, digits, '-', '_', '.')",
                fix="rename the key in the credentials file or in fromEnv",
            )
        data[key] = REDACTED if redact else base64.b64encode(value.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": creds.secret_name, "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/managed-by": "seedbed"}},
        "data": data,
    }


def render_longhorn(cfg: LonghornConfig, manifest_text: str, *,
                    backup_credentials: Mapping[str, str] | None = None,
                    redact: bool = False) -> list[dict[str, Any]]:
    """The Longhorn manifest's objects with seedbed's settings, plus the backup credential Secret.

    ``backup_credentials`` are the values read by the caller (file or environment). ``redact``
    renders for display: credential values become ``<redacted>`` and may be omitted.
    """
    creds = cfg.backup_credentials  # with a backup target: config.check_backup_credentials
    if creds is not None and backup_credentials is None and not redact:
        raise ConfigError("longhorn.backupCredentials: no credential values were read",
                          fix="give fromFile or fromEnv in longhorn.backupCredentials")
    if creds is not None and not backup_credentials and not redact:
        raise ConfigError("longhorn.backupCredentials: the credentials are empty",
                          fix="put the backup target's credentials in the file or variables named")

    try:
        objs = yamlutil.load_all(manifest_text)
    except yaml.YAMLError as e:
        raise ManifestError(f"the Longhorn manifest is not valid YAML: {e}",
                            fix="download the release manifest again (the cache may be damaged)") from None
    layout = inspect(objs)
    if layout.version is not None and layout.version != cfg.version:
        raise ManifestError(
            f"the Longhorn manifest is version {layout.version}, but longhorn.version is {cfg.version}",
            fix=f"set longhorn.version: {layout.version}, or use the manifest of {cfg.version}",
        )

    settings: dict[str, Any] = {"default-data-path": cfg.data_path}
    backup: dict[str, Any] = {}
    if cfg.backup_target:
        backup["backup-target"] = cfg.backup_target
        if creds is not None:
            backup["backup-target-credential-secret"] = creds.secret_name
    if not layout.has_default_resource:
        # Before v1.8 the backup target was an ordinary setting.
        settings.update(backup)

    setting_cm = _find(objs, "ConfigMap", SETTING_CONFIGMAP[0])
    assert setting_cm is not None  # inspect() checked
    setting_cm["data"][SETTING_CONFIGMAP[1]] = set_top_level_keys(
        _configmap_doc(setting_cm, SETTING_CONFIGMAP[1]), settings)

    if layout.has_default_resource and backup:
        resource_cm = _find(objs, "ConfigMap", RESOURCE_CONFIGMAP[0])
        assert resource_cm is not None
        resource_cm["data"][RESOURCE_CONFIGMAP[1]] = set_top_level_keys(
            _configmap_doc(resource_cm, RESOURCE_CONFIGMAP[1]), backup)

    def storage_class(sc: dict[str, Any]) -> None:
        meta = sc.setdefault("metadata", {})
        annotations = meta.get("annotations") or {}
        annotations[DEFAULT_CLASS_ANNOTATION] = "true" if cfg.default_storage_class else "false"
        meta["annotations"] = annotations
        params = sc.get("parameters") or {}
        params["numberOfReplicas"] = str(cfg.replica_count)  # StorageClass parameters are strings
        sc["parameters"] = params

    if layout.storageclass_in_configmap:
        sc_cm = _find(objs, "ConfigMap", STORAGECLASS_CONFIGMAP[0])
        assert sc_cm is not None
        sc_cm["data"][STORAGECLASS_CONFIGMAP[1]] = _edit_document(
            _configmap_doc(sc_cm, STORAGECLASS_CONFIGMAP[1]), storage_class,
            f"ConfigMap {STORAGECLASS_CONFIGMAP[0]} {STORAGECLASS_CONFIGMAP[1]}")
    else:
        sc_obj = _find(objs, "StorageClass", STORAGE_CLASS)
        assert sc_obj is not None
        storage_class(sc_obj)

    if creds is not None:
        objs.append(credentials_secret(creds, backup_credentials, redact=redact))
    return objs


# --------------------------------------------------------------------------- existing clusters


class Finding(msgspec.Struct, frozen=True):
    """One thing found on an existing cluster: a warning, or (``refuse``) a reason to stop."""

    message: str
    fix: str | None = None
    refuse: bool = False


def node_disk_paths(nodes: list[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Longhorn Node objects (longhorn.io/v1beta2) -> node name -> its disks' paths."""
    out: dict[str, list[str]] = {}
    for node in nodes:
        name = str((node.get("metadata") or {}).get("name", "?"))
        disks = (node.get("spec") or {}).get("disks") or {}
        out[name] = [str(d.get("path")) for d in disks.values() if isinstance(d, Mapping) and d.get("path")]
    return out


def default_storage_classes(classes: list[Mapping[str, Any]]) -> list[str]:
    """Names of the StorageClasses, other than Longhorn's own, marked as the cluster default."""
    names = []
    for sc in classes:
        meta = sc.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        if meta.get("name") == STORAGE_CLASS:
            continue
        if any(str(annotations.get(a, "")).lower() == "true"
               for a in (DEFAULT_CLASS_ANNOTATION, BETA_DEFAULT_CLASS_ANNOTATION)):
            names.append(str(meta.get("name")))
    return sorted(names)


def check_existing(cfg: LonghornConfig, *, installed_version: str | None,
                   node_disk_paths: Mapping[str, list[str]],
                   default_storage_classes: list[str], allow_upgrade: bool) -> list[Finding]:
    """What an existing cluster means for this install. Pure: the caller reads the cluster."""
    findings: list[Finding] = []
    if installed_version is not None and installed_version != cfg.version:
        have, want = release_tuple(installed_version), release_tuple(cfg.version)
        if have and want and want < have:
            # Longhorn's manager refuses to start on data written by a newer release.
            findings.append(Finding(
                f"Longhorn {installed_version} is installed; longhorn.version {cfg.version} would be a "
                "downgrade, which Longhorn does not support",
                fix=f"set longhorn.version: {installed_version}", refuse=True))
        elif not allow_upgrade:
            findings.append(Finding(
                f"Longhorn {installed_version} is already installed; longhorn.version is {cfg.version}; "
                "nothing was changed",
                fix=f"set longhorn.version: {installed_version} to keep it, or pass --allow-upgrade "
                    "after reading Longhorn's upgrade notes", refuse=True))
        elif have and want and (want[0], want[1]) > (have[0], have[1] + 1):
            findings.append(Finding(
                f"upgrading Longhorn {installed_version} -> {cfg.version} skips a minor release; Longhorn "
                "supports upgrades from the previous minor release only",
                fix="upgrade one minor release at a time (set longhorn.version to each in turn)"))

    want_path = cfg.data_path.rstrip("/")
    for node, paths in sorted(node_disk_paths.items()):
        if paths and want_path not in {p.rstrip("/") for p in paths}:
            findings.append(Finding(
                f"Longhorn node {node} already has disks at {', '.join(sorted(paths))}; the data path "
                f"setting ({cfg.data_path}) applies only to nodes without disks, so it will not take effect there",
                fix=f"add a disk at {cfg.data_path} in Longhorn's UI (Node > Edit node and disks), "
                    f"or set longhorn.dataPath to the path in use"))

    if cfg.default_storage_class and default_storage_classes:
        names = ", ".join(default_storage_classes)
        findings.append(Finding(
            f"StorageClass {names} is already the cluster default; making longhorn the default too would "
            "leave two defaults",
            fix="set longhorn.defaultStorageClass: false, or remove the default mark first: "
                + "; ".join(f"kubectl annotate storageclass {n} {DEFAULT_CLASS_ANNOTATION}=false --overwrite"
                            for n in default_storage_classes),
            refuse=True))
    return findings


def raise_refusals(findings: list[Finding]) -> None:
    """Raise one Refused naming every refusal among ``findings``."""
    refusals = [f for f in findings if f.refuse]
    if refusals:
        raise Refused("; ".join(f.message for f in refusals),
                      fix="; ".join(f.fix for f in refusals if f.fix) or None)
