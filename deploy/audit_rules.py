"""R-LOG 访问日志与操作审计 on a host: the baomi audit rules file, loaded where the kernel can."""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import operation
from pyinfra.operations import files

from baomi.controls import audit_rules as core
from baomi.deploy.common import Observation, context, op_name, put_text
from baomi.fixes.audit_rules import load_command

C = core.CONTROL.name


@operation()
def load_rules(want: core.Desired):  # type: ignore[no-untyped-def]
    """Load the rules into the kernel when they are not loaded yet (or stale ones are)."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script(want)), want)
    not_here = core.skipped(want, seen).get(core.LOADED.id)
    if not_here:
        # Inside a PID namespace (containers, the lab) auditctl gets EPERM: say so, do not fail.
        reason = f"{core.RULES_FILE} installed; {not_here}"
        host.noop(reason)
        logger.warning(f"{host.print_prefix}[{C}] {reason}")  # shown without -v: never hidden
        return
    missing = [w for w in want.watches if w.rule not in (seen.loaded or ())]
    if not missing and not core.stale(want, seen):
        host.noop(f"the kernel has the {len(want.watches)} baomi watch rule(s) loaded")
        return
    yield load_command(seen.augenrules)


def apply() -> None:
    want = core.desired(context())
    if want.content is None:
        files.file(name=op_name(C, f"{core.RULES_FILE} absent"), path=core.RULES_FILE,
                   present=False)
        return
    put_text(C, core.RULES_FILE, want.content, mode="0640")
    load_rules(name=op_name(C, "load the rules into the kernel"), want=want)
