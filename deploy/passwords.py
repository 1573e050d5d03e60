"""R-PWD 密码策略 on a host: pwquality drop-in, pam_pwquality in the PAM stack, login.defs
ageing, and the same ageing on every existing human account (chage)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import OperationError, operation
from pyinfra.operations import apt

from baomi.controls import passwords as core
from baomi.deploy.common import Observation, context, op_name, put_text
from baomi.fixes import passwords as fix
from baomi.pwquality import COMMON_PASSWORD, DEFAULT_DICT

C = core.CONTROL.name


def _seen(want: core.Desired) -> core.Observed:
    return core.parse(host.get_fact(Observation, script=core.observe_script(want)), want)


@operation()
def dictionary(want: core.Desired):  # type: ignore[no-untyped-def]
    """Rebuild the cracklib dictionary when the dictionary check is on and it is missing."""
    seen = _seen(want)
    if not core.dictionary_missing(seen):
        host.noop("the cracklib dictionary is in place (or the dictionary check is off)")
        return
    yield fix.dictionary_script(seen)


@operation()
def pwquality_overrides(want: core.Desired):  # type: ignore[no-untyped-def]
    """Comment out later pwquality lines that weaken the drop-in, or stop libpwquality reading."""
    script = fix.neutralise_script(_seen(want), want)
    if not script:
        host.noop("no pwquality setting overrides the baomi drop-in")
        return
    yield script


@operation()
def pam_stack(want: core.Desired):  # type: ignore[no-untyped-def]
    """pam_pwquality requisite before pam_unix in common-password, no weakening arguments."""
    seen = _seen(want)
    if not fix.pam_needs_change(want, seen):
        host.noop(f"{COMMON_PASSWORD} runs pam_pwquality as the policy needs")
        return
    yield "export DEBIAN_FRONTEND=noninteractive; " + fix.pam_script(want, seen)


@operation()
def login_defs(want: core.Desired):  # type: ignore[no-untyped-def]
    """PASS_MAX_DAYS / PASS_MIN_DAYS / PASS_WARN_AGE edited in place (what new accounts get)."""
    seen = _seen(want)
    if not core.login_defs_findings(want, seen):
        host.noop(f"{core.LOGIN_DEFS} holds the policy's ageing")
        return
    yield fix.login_defs_script(want, seen)


@operation()
def account_ageing(want: core.Desired):  # type: ignore[no-untyped-def]
    """chage every human account whose ageing differs (read from shadow on the host)."""
    seen = _seen(want)
    if seen.shadow_error is not None:
        raise OperationError(f"cannot read /etc/shadow: {seen.shadow_error}")
    commands = fix.ageing_commands(want, seen)
    if not commands:
        host.noop(f"{len(core.aged(want, seen))} human account(s) already aged as the policy says")
        return
    yield from commands


def apply() -> None:
    want = core.desired(context())
    apt.packages(name=op_name(C, "packages " + ", ".join(core.PACKAGES)),
                 packages=list(core.PACKAGES))
    dictionary(name=op_name(C, f"cracklib dictionary {DEFAULT_DICT}"), want=want)
    put_text(C, core.DROPIN, want.dropin)
    pwquality_overrides(name=op_name(C, "pwquality settings overriding the drop-in"), want=want)
    pam_stack(name=op_name(C, f"{COMMON_PASSWORD} pam_pwquality"), want=want)
    login_defs(name=op_name(C, f"{core.LOGIN_DEFS} ageing"), want=want)
    account_ageing(name=op_name(C, "ageing of existing human accounts (chage)"), want=want)
