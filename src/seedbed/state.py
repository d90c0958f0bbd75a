"""What seedbed remembers on the cluster itself, in two ConfigMaps of ``kube-system``.

- ``seedbed-state``: one key per finished bootstrap step (the digest of its plan, when, which
  seedbed), ``backup``: when the last backup was taken, and ``check.<name>``: the commit a check of
  the repository passed at (:class:`CheckMemo`). A re-run skips a step whose digest is unchanged
  (see ``steps/base.py``) and a check whose commit and inputs are; ``status`` reads the backup record.
- ``seedbed-ledger``: the certificate issuance ledger a restore put back, so that the Let's
  Encrypt history survives any number of rebuilds.

Nothing is kept on the operator's disk: the cluster is the one place, so two laptops agree.
What is read back is checked like any input: a damaged record is named, with the way out.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import msgspec

if TYPE_CHECKING:
    from .kube import Kube
    from .output import Output

NAMESPACE = "kube-system"
STATE_CONFIGMAP = "seedbed-state"
LEDGER_CONFIGMAP = "seedbed-ledger"
LEDGER_KEY = "ledger.json"
BACKUP_KEY = "backup"
CHECK_PREFIX = "check."


class BackupRecord(msgspec.Struct, frozen=True):
    time: datetime
    file: str
    entries: int


def _where(name: str) -> str:
    return f"ConfigMap {NAMESPACE}/{name}"


LEDGER_WHERE = _where(LEDGER_CONFIGMAP)
LEDGER_FIX = (f"delete it (kubectl -n {NAMESPACE} delete configmap {LEDGER_CONFIGMAP}): the next backup "
              "takes the history from the cluster's certificates, and a restore writes it again")


class StepRecords:
    """Which bootstrap steps finished, with the digest of their plan, and the memos of the checks
    (:class:`CheckMemo`): one read of ``seedbed-state`` per run."""

    def __init__(self, kube: Kube, out: Output) -> None:
        self.kube = kube
        self.out = out
        self._digests: dict[str, str] = {}
        self._checks: dict[str, CheckMemo] = {}

    async def load(self) -> None:
        cm = await self.kube.get("v1", "ConfigMap", STATE_CONFIGMAP, namespace=NAMESPACE)
        data = (cm or {}).get("data") or {}
        if not isinstance(data, dict):
            data = {}
        damaged = []
        for key, raw in data.items():
            if key.startswith(CHECK_PREFIX):
                if (memo := _check_memo(raw)) is not None:  # a damaged memo: the check simply runs
                    self._checks[key.removeprefix(CHECK_PREFIX)] = memo
                continue
            if key == BACKUP_KEY:
                continue
            try:
                record = json.loads(raw) if isinstance(raw, str) else None
                digest = record.get("digest") if isinstance(record, dict) else None
            except ValueError:
                digest = None
            if isinstance(digest, str) and digest.startswith("sha256:"):
                self._digests[key] = digest
            else:
                damaged.append(key)
        if damaged:
            # Not fatal: a step without a record simply runs again (every step is idempotent).
            self.out.warn(f"{_where(STATE_CONFIGMAP)}: the record of {', '.join(sorted(damaged))} is damaged; "
                          "those steps run again and rewrite it")

    def digest(self, step: str) -> str | None:
        return self._digests.get(step)

    def check(self, name: str) -> CheckMemo | None:
        return self._checks.get(name)

    async def record_check(self, name: str, memo: CheckMemo) -> None:
        if len(memo.warnings) > _MEMO_LINES:
            return
        self._checks[name] = memo
        await self._write(CHECK_PREFIX + name, {**msgspec.structs.asdict(memo), "checkedAt": _now()})

    async def record(self, step: str, digest: str) -> None:
        from . import __version__

        self._digests[step] = digest
        await self._write(step, {"digest": digest, "finishedAt": _now(), "seedbedVersion": __version__})

    async def _write(self, key: str, record: dict[str, object]) -> None:
        await self.kube.set_configmap_data(NAMESPACE, STATE_CONFIGMAP, {key: json.dumps(record, sort_keys=True)})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_MEMO_LINES = 50  # warnings kept; a check that says more runs again rather than lose some


class CheckMemo(msgspec.Struct, frozen=True):
    """A check of the server's repository that passed: at which commit, over which inputs (a digest
    of what else its answer depends on), and what it said (warnings, then the summary line)."""

    commit: str
    inputs: str
    warnings: Annotated[tuple[str, ...], msgspec.Meta(max_length=_MEMO_LINES)]
    summary: str


def _check_memo(raw: object) -> CheckMemo | None:
    """A check's memo as stored; None when it is damaged (read like any input from the cluster)."""
    if not isinstance(raw, str):
        return None
    try:
        return msgspec.json.decode(raw, type=CheckMemo)
    except msgspec.DecodeError:  # ValidationError included
        return None


async def read_backup_record(kube: Kube) -> BackupRecord | None:
    """The last backup's record; None when there is none. A damaged one is a ClusterError with the fix."""
    from .errors import ClusterError

    cm = await kube.get("v1", "ConfigMap", STATE_CONFIGMAP, namespace=NAMESPACE)
    raw = ((cm or {}).get("data") or {}).get(BACKUP_KEY)
    if not raw:
        return None
    try:
        record = json.loads(raw)
        taken = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
        if taken.tzinfo is None:
            taken = taken.replace(tzinfo=UTC)
        return BackupRecord(taken, str(record.get("file", "?")), int(record.get("entries", 0)))
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ClusterError(f"{_where(STATE_CONFIGMAP)}: key {BACKUP_KEY!r} is damaged",
                           fix=f"kubectl -n {NAMESPACE} patch configmap {STATE_CONFIGMAP} --type json "
                               f"-p '[{{\"op\":\"remove\",\"path\":\"/data/{BACKUP_KEY}\"}}]'; the next backup "
                               "writes it again") from None


async def record_backup(kube: Kube, file: str, entries: int) -> None:
    record = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "file": file, "entries": entries}
    await kube.set_configmap_data(NAMESPACE, STATE_CONFIGMAP, {BACKUP_KEY: json.dumps(record, sort_keys=True)})


async def read_ledger_text(kube: Kube) -> str | None:
    """The issuance ledger's JSON text as a previous restore stored it (validated by the caller);
    None when there is none."""
    from .errors import ClusterError

    cm = await kube.get("v1", "ConfigMap", LEDGER_CONFIGMAP, namespace=NAMESPACE)
    if cm is None:
        return None
    data = cm.get("data")
    text = data.get(LEDGER_KEY) if isinstance(data, dict) else None
    if not isinstance(text, str) or not text:
        raise ClusterError(f"{LEDGER_WHERE} has no {LEDGER_KEY} text", fix=LEDGER_FIX)
    return text


async def store_ledger_text(kube: Kube, text: str) -> None:
    await kube.set_configmap_data(NAMESPACE, LEDGER_CONFIGMAP, {LEDGER_KEY: text})
