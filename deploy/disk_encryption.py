"""R-ENC 加密存储 on a host: each data volume of the policy as LUKS2, its recovery key escrowed.

Per volume, in order (each operation reads the host again at execute time):

1. the LUKS2 header: only on a blank device, or on one that a one-time wipe permission names
   (``baomi disk allow-wipe``: this host, this device, its serial; recorded as used before the
   host gets the script); a header baomi escrowed is left alone, any other LUKS header is
   never touched; anything else stops the host with the reason.  The host checks the device
   (baomi/fixes/disk_encryption.gate_script) in the observation and again in the script, right
   before ``luksFormat``.
   The recovery passphrase is generated here on the controller and escrowed *before* the
   host sees it (a crash cannot leave it only on the host); it reaches the host as a 0600
   file on tmpfs (``/run``), never on a command line, and is removed however the script ends.
2. open the mapping with the key file; 3. a filesystem on a blank mapping only;
4. ``/etc/crypttab`` and 5. ``/etc/fstab`` lines; 6. mounted.
"""

from __future__ import annotations

import dataclasses
import secrets
import shlex
import uuid

from pyinfra import host
from pyinfra.api import OperationError, operation

from baomi.controller import wipe
from baomi.controller.escrow import EscrowError, EscrowStore
from baomi.controls import disk_encryption as core
from baomi.deploy.common import Observation, context, op_name, put_secret
from baomi.fixes import disk_encryption as fix
from baomi.observe import script, sections
from baomi.records import RecordError

C = core.CONTROL.name


def _seen(want: core.Desired, v: core.VolumeWant) -> tuple[core.Observed, core.VolumeSeen]:
    one = dataclasses.replace(want, volumes=(v,), paths=(), root=False)
    observed = core.parse(host.get_fact(Observation, script=core.observe_script(one)), one)
    return observed, observed.volumes[0]


def _escrowed_uuids(store: EscrowStore, device: str) -> set[str]:
    try:
        entries = store.entries()
    except EscrowError as exc:
        raise OperationError(f"escrow store: {exc}") from None
    return {str(e["meta"].get("luks_uuid")) for e in entries
            if e["kind"] == core.ESCROW_KIND and e["host"] == host.name
            and e["subject"] == device}


def recovery_passphrase() -> str:
    """Eight groups of five from an unambiguous alphabet: ~190 bits, typeable at a console."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(8))


def _permission(device: str) -> wipe.Permission | None:
    try:
        return wipe.open_permission(host.name, device)
    except RecordError as exc:
        raise OperationError(f"[{C}] wipe permissions: {exc}") from None


def _gates(v: core.VolumeWant, real: str | None,
           permission: wipe.Permission | None) -> tuple[fix.Gate, fix.Gate | None]:
    """The host's verdicts on the device: as it is, and under the open wipe permission."""
    checks = {"blank": fix.gate_script(host.name, v.device, real)}
    if permission is not None:
        checks["wipe"] = fix.gate_script(host.name, v.device, real, permission.serial)
    found = sections(host.get_fact(Observation, script=script(checks)))
    return (fix.Gate.of(found.get("blank")),
            fix.Gate.of(found.get("wipe")) if permission is not None else None)


@operation()
def luks_header(want: core.Desired, v: core.VolumeWant):  # type: ignore[no-untyped-def]
    _, seen = _seen(want, v)
    store = EscrowStore.default()
    permission = _permission(v.device)
    blank, wiping = _gates(v, seen.real, permission)
    decision = fix.decide(v, seen, _escrowed_uuids(store, v.device), blank,
                          permission.id if permission else None, wiping)
    if decision.action == "refuse":
        raise OperationError(f"[{C}] {decision.reason}")
    if decision.action == "keep":
        host.noop(decision.reason)
        return
    recovery_file = f"{core.SECRETS_DIR}/{v.name}.recovery"
    if not host.state.is_executing:
        # Planning: say what would happen; no secret is generated or escrowed for a plan.
        yield "echo " + shlex.quote(f"{decision.reason}: would format LUKS2 and escrow its "
                                    "recovery key")
        return
    luks_uuid = str(uuid.uuid4())
    secret = recovery_passphrase()
    try:
        store.put(core.ESCROW_KIND, host.name, v.device, secret, {
            "luks_uuid": luks_uuid, "mapper": v.name, "mount": v.mount,
            "key_slot": core.RECOVERY_SLOT, "cipher": want.cipher, "key_size": want.key_size})
    except (EscrowError, OSError) as exc:
        raise OperationError(f"[{C}] cannot escrow the recovery key, not formatting: {exc}") \
            from None
    wipe_serial = None
    if decision.permission is not None and permission is not None:
        try:  # used up before the host sees the script: it can never serve twice
            wipe.consume(permission, luks_uuid)
        except RecordError as exc:
            raise OperationError(f"[{C}] cannot record the wipe permission as used, not "
                                 f"wiping: {exc}") from None
        wipe_serial = permission.serial
    yield f"mkdir -p -m 0700 {core.SECRETS_DIR}"
    yield from put_secret(recovery_file, secret)
    yield fix.format_script(want, v, host.name, luks_uuid, recovery_file, seen.real or v.device,
                            wipe_serial)


def _require_luks(seen: core.VolumeSeen, v: core.VolumeWant) -> core.LuksHeader | None:
    """At execute time the header exists (luks_header ran first); while planning it may not."""
    if seen.luks is None or seen.luks.uuid is None:
        if host.state.is_executing:
            raise OperationError(f"[{C}] {v.device} has no LUKS header")
        return None
    return seen.luks


@operation()
def luks_open(want: core.Desired, v: core.VolumeWant):  # type: ignore[no-untyped-def]
    observed, seen = _seen(want, v)
    status = observed.crypt.get(v.name)
    if status is not None and status.active and status.device == seen.real:
        host.noop(f"{v.mapper} is open on {seen.real}")
        return
    if status is not None and status.active:
        raise OperationError(f"[{C}] {v.mapper} is open on {status.device}, not {v.device}")
    _require_luks(seen, v)
    yield fix.open_command(v)


@operation()
def filesystem(want: core.Desired, v: core.VolumeWant):  # type: ignore[no-untyped-def]
    _, seen = _seen(want, v)
    if seen.inner:
        kind = seen.inner.get("TYPE", "a signature")
        if kind != v.filesystem:
            raise OperationError(f"[{C}] {v.mapper} holds {kind}, not {v.filesystem}: "
                                 "not reformatting it")
        host.noop(f"{v.mapper} holds {kind}")
        return
    yield fix.mkfs_command(v)


@operation()
def crypttab(want: core.Desired, v: core.VolumeWant):  # type: ignore[no-untyped-def]
    observed, seen = _seen(want, v)
    header = _require_luks(seen, v)
    line = v.crypttab_line(header.uuid if header and header.uuid else "PENDING")
    if core.table_line(observed.crypttab, v.name) == line:
        host.noop(f"{core.CRYPTTAB} unlocks {v.name} with {v.key_file}")
        return
    yield fix.replace_line_script(core.CRYPTTAB, line, 1, v.name)


@operation()
def fstab(want: core.Desired, v: core.VolumeWant):  # type: ignore[no-untyped-def]
    observed, _ = _seen(want, v)
    if core.table_line(observed.fstab, "", v.mount) == v.fstab_line:
        host.noop(f"{core.FSTAB} mounts {v.mapper} on {v.mount}")
        return
    yield fix.replace_line_script(core.FSTAB, v.fstab_line, 2, v.mount)


@operation()
def mounted(want: core.Desired, v: core.VolumeWant):  # type: ignore[no-untyped-def]
    observed, _ = _seen(want, v)
    there = [d for d in observed.devices.values() if v.mount in d.mountpoints]
    if there and there[0].name == v.name:
        host.noop(f"{v.mapper} is mounted on {v.mount}")
        return
    if there:
        raise OperationError(f"[{C}] {there[0].path} is mounted on {v.mount}, not {v.mapper}")
    yield fix.mount_script(v)


@operation()
def nothing(reason: str):  # type: ignore[no-untyped-def]
    host.noop(reason)
    yield from ()


def apply() -> None:
    want = core.desired(context())
    if not want.volumes:
        # Still one operation, so `baomi apply` reports the control for every host.
        nothing(name=op_name(C, "data volumes"),
                reason="disk_encryption is disabled" if not want.enabled
                else "no data volume of the policy for this host's groups")
        return
    for v in want.volumes:
        luks_header(name=op_name(C, f"{v.name}: LUKS2 on {v.device}"), want=want, v=v)
        luks_open(name=op_name(C, f"{v.name}: open"), want=want, v=v)
        filesystem(name=op_name(C, f"{v.name}: {v.filesystem} filesystem"), want=want, v=v)
        crypttab(name=op_name(C, f"{v.name}: {core.CRYPTTAB}"), want=want, v=v)
        fstab(name=op_name(C, f"{v.name}: {core.FSTAB}"), want=want, v=v)
        mounted(name=op_name(C, f"{v.name}: mounted on {v.mount}"), want=want, v=v)
