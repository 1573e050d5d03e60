"""R-ACL 最小权限, R-CLS 密级分类: sensitive paths exist, owned as the policy says, never looser
than their level's ceilings (recursively), and carry their level's mark.

Marking (``policy.marking``):

* ``xattr``: the path (the top directory) carries the extended attribute ``user.baomi.level``
  holding the level's English and Chinese names, e.g. ``confidential 机密``
  (``getfattr -n user.baomi.level PATH`` or ``python3 -c 'import os; print(os.getxattr(...))'``);
* ``file``: the file ``PATH/.baomi-level`` holds the same text and a newline.

Modes are ceilings: an entry may be stricter than ``max_file_mode``/``max_dir_mode``, never
looser.  The observe script lets ``find`` select only the offending entries on the host (so a
tree of 200,000 compliant files sends nothing back) and caps the evidence at
:data:`EVIDENCE_CAP` entries per path and kind, with the total count.  Symbolic links are not
judged (their mode is always 0777; what they point to is judged where it lives).

The control contract (:mod:`baomi.controls.contract`): four checks, each a kind of thing
looked at on every path (``sensitive_paths.directory``, ``.ownership``, ``.file_mode`` under
R-ACL; ``.mark`` under R-CLS).  ``deploy/sensitive_paths.py``, ``checks/test_sensitive_paths.py``
and the agent run them; the fixes (chown, chmod, marks) are in :mod:`baomi.fixes.sensitive_paths`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from baomi.controls.contract import Check, Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import script, sections

DIRECTORY = check("sensitive_paths.directory", "each sensitive path is a directory",
                  ("R-ACL",))
OWNERSHIP = check("sensitive_paths.ownership",
                  "every entry owned by the path's owner and group, which exist", ("R-ACL",))
FILE_MODE = check("sensitive_paths.file_mode",
                  "no file or directory looser than its level's ceilings", ("R-ACL",))
MARK = check("sensitive_paths.mark", "each path carries its level's mark", ("R-CLS",))
CHECKS = (DIRECTORY, OWNERSHIP, FILE_MODE, MARK)
MARK_ATTR = "user.baomi.level"
MARK_FILE = ".baomi-level"
EVIDENCE_CAP = 20
_ENTRY_FORMAT = r"%y %m %u %g %p\n"


@dataclass(frozen=True)
class PathWant:
    """One sensitive path as the host must have it."""

    path: str
    level: str
    severity: str
    owner: str
    group: str
    max_file_mode: int
    max_dir_mode: int
    mark: str

    @property
    def file_excess(self) -> int:
        """Permission bits a file may never have (``find -perm /MASK`` selects offenders)."""
        return 0o777 & ~self.max_file_mode

    @property
    def dir_excess(self) -> int:
        return 0o777 & ~self.max_dir_mode


@dataclass(frozen=True)
class Desired:
    marking: str
    paths: tuple[PathWant, ...]


def marker_file(want: PathWant) -> str:
    """The marker file of ``marking: file``."""
    return f"{want.path.rstrip('/')}/{MARK_FILE}"


def mark_text(english: str, chinese: str) -> str:
    return f"{english} {chinese}"


def desired(ctx: HostContext) -> Desired:
    policy = ctx.policy
    wants = []
    for p in policy.paths_for(set(ctx.groups)):
        level = policy.level(p.level)
        wants.append(PathWant(path=p.path, level=level.name, severity=level.severity,
                              owner=p.owner, group=p.group, max_file_mode=level.max_file_mode,
                              max_dir_mode=level.max_dir_mode,
                              mark=mark_text(level.english, level.name)))
    return Desired(marking=policy.marking, paths=tuple(wants))


def _capped(find: str) -> str:
    """Offending entries, the first EVIDENCE_CAP of them, then ``total N``."""
    return f"{find} | awk -v cap={EVIDENCE_CAP} 'NR<=cap{{print}} END{{print \"total \" NR}}'"


def owner_predicate(want: PathWant) -> str:
    """Shell that sets "$@" to find's test for a wrong owner or group.

    A name that does not exist on the host cannot own anything: every entry is then wrong
    (``-true``), instead of find failing on an unknown name.
    """
    o, g = shlex.quote(want.owner), shlex.quote(want.group)
    return (f"if getent passwd {o} >/dev/null; then set -- ! -user {o}; else set -- -true; fi; "
            f"if getent group {g} >/dev/null; then set -- \"$@\" -o ! -group {g}; "
            "else set -- \"$@\" -o -true; fi")


def mode_predicate(want: PathWant) -> str:
    return (f"\\( -type d -perm /{want.dir_excess:03o} \\) -o "
            f"\\( ! -type d -perm /{want.file_excess:03o} \\)")


def observe_script(want: Desired) -> str:
    """Read-only commands for the paths that apply to this host (sections ``*.N``, N = index)."""
    commands: dict[str, str] = {}
    for n, p in enumerate(want.paths):
        q = shlex.quote(p.path)
        commands[f"root.{n}"] = (f"if [ -e {q} ] || [ -L {q} ]; then "
                                 f"find {q} -maxdepth 0 -printf '{_ENTRY_FORMAT}'; else exit 1; fi")
        commands[f"accounts.{n}"] = (
            f"getent passwd {shlex.quote(p.owner)} >/dev/null && echo user; "
            f"getent group {shlex.quote(p.group)} >/dev/null && echo group; true")
        guard = f"[ -d {q} ] || exit 1; "
        commands[f"owners.{n}"] = guard + owner_predicate(p) + "; " + _capped(
            f"find {q} ! -type l \\( \"$@\" \\) -printf '{_ENTRY_FORMAT}'")
        commands[f"modes.{n}"] = guard + _capped(
            f"find {q} ! -type l \\( {mode_predicate(p)} \\) -printf '{_ENTRY_FORMAT}'")
        if want.marking == "xattr":
            commands[f"mark.{n}"] = read_xattr(p.path)
        else:
            commands[f"mark.{n}"] = f"cat {shlex.quote(marker_file(p))}"
    return script(commands)


def read_xattr(path: str) -> str:
    """The mark's value (no newline); rc != 0 when absent.  getfattr if installed, else python3."""
    q = shlex.quote(path)
    return (f"if command -v getfattr >/dev/null; then getfattr --absolute-names --only-values "
            f"-n {MARK_ATTR} {q}; else python3 -c 'import os, sys; sys.stdout.write(os.getxattr("
            f"sys.argv[1], sys.argv[2]).decode())' {q} {MARK_ATTR}; fi")


@dataclass(frozen=True)
class Entry:
    """One line of ``find -printf '%y %m %u %g %p'``."""

    kind: str  # find's %y: d, f, l, ...
    mode: int
    owner: str
    group: str
    path: str

    def show(self) -> str:
        return f"{self.path} ({'directory' if self.kind == 'd' else 'file'} " \
               f"{self.mode:04o} {self.owner}:{self.group})"


@dataclass(frozen=True)
class Offenders:
    """The first entries ``find`` selected and how many it selected in all."""

    entries: tuple[Entry, ...]
    total: int


@dataclass(frozen=True)
class PathSeen:
    root: Entry | None
    owner_exists: bool
    group_exists: bool
    owners: Offenders
    modes: Offenders
    mark: str | None


@dataclass(frozen=True)
class Observed:
    paths: tuple[PathSeen, ...]


def parse_entry(line: str) -> Entry | None:
    parts = line.split(" ", 4)
    if len(parts) != 5 or len(parts[0]) != 1:
        return None
    try:
        mode = int(parts[1], 8)
    except ValueError:
        return None
    return Entry(parts[0], mode, parts[2], parts[3], parts[4])


def parse_offenders(text: str | None) -> Offenders:
    entries: list[Entry] = []
    total = 0
    for line in (text or "").splitlines():
        if line.startswith("total ") and line[6:].strip().isdigit():
            total = int(line[6:].strip())
        elif (entry := parse_entry(line)) is not None:
            entries.append(entry)
    return Offenders(tuple(entries), max(total, len(entries)))


def parse(output: str, want: Desired) -> Observed:
    """Sections ``root.N`` … ``mark.N`` for each path N of the desired state, in order."""
    sec = sections(output)
    count = sum(1 for name in sec if name.startswith("root."))

    text = sec.text

    seen = []
    for n in range(count):
        root_text = text(f"root.{n}")
        root = parse_entry(root_text.strip()) if root_text else None
        accounts = (text(f"accounts.{n}") or "").split()
        mark = text(f"mark.{n}")
        seen.append(PathSeen(
            root=root,
            owner_exists="user" in accounts,
            group_exists="group" in accounts,
            owners=parse_offenders(text(f"owners.{n}")),
            modes=parse_offenders(text(f"modes.{n}")),
            mark=mark.strip() if mark is not None else None,
        ))
    return Observed(tuple(seen))


def excess(want: PathWant, entry: Entry) -> int:
    ceiling = want.max_dir_mode if entry.kind == "d" else want.max_file_mode
    return entry.mode & 0o777 & ~ceiling


def marked_at(want: Desired, p: PathWant) -> str:
    """Where a path's mark lives: its xattr, or the marker file in it."""
    if want.marking == "xattr":
        return f"{p.path} xattr {MARK_ATTR}"
    return marker_file(p)


def _more(check: Check, want: PathWant, found: Offenders, what: str) -> list[Finding]:
    hidden = found.total - len(found.entries)
    if hidden <= 0:
        return []
    return [check.finding(want.path, f"no entry {what}",
                          f"{hidden} more entries beyond the first {len(found.entries)} shown",
                          want.severity, total=found.total)]


def owner_finding(want: PathWant, e: Entry) -> Finding:
    return OWNERSHIP.finding(e.path, f"owner {want.owner}:{want.group}", f"{e.owner}:{e.group}",
                             want.severity)


def mode_finding(want: PathWant, e: Entry) -> Finding:
    bits = excess(want, e)
    ceiling = want.max_dir_mode if e.kind == "d" else want.max_file_mode
    kind = "directory" if e.kind == "d" else "file"
    return FILE_MODE.finding(e.path, f"{kind} mode at most {ceiling:04o} ({want.level})",
                             f"{e.mode:04o} (too open by {bits:04o}"
                             + (", world access" if bits & 0o007 else "") + ")", want.severity)


def entry_findings(want: PathWant, e: Entry) -> list[Finding]:
    """One entry judged on its own (the agent's real-time watch): owner and mode ceiling.

    Symbolic links are not judged (what they point to is judged where it lives)."""
    if e.kind == "l":
        return []
    found = []
    if (e.owner, e.group) != (want.owner, want.group):
        found.append(owner_finding(want, e))
    if excess(want, e):
        found.append(mode_finding(want, e))
    return found


def compare(want: Desired, seen: Observed) -> list[Finding]:
    findings: list[Finding] = []
    for p, s in zip(want.paths, seen.paths, strict=True):
        owner = f"{p.owner}:{p.group}"
        sev = p.severity
        if s.mark != p.mark:
            findings.append(MARK.finding(marked_at(want, p), repr(p.mark),
                                         "missing" if s.mark is None else repr(s.mark[:80]),
                                         sev))
        if s.root is None:
            findings.append(DIRECTORY.finding(p.path, f"a directory ({p.level}, {owner})",
                                              "missing", sev))
            continue
        if s.root.kind != "d":
            findings.append(DIRECTORY.finding(p.path, f"a directory ({p.level})",
                                              f"type {s.root.kind!r}", sev))
            continue
        if not s.owner_exists:
            findings.append(OWNERSHIP.finding(f"{p.path} owner", f"user {p.owner} exists",
                                              "no such user", sev))
        if not s.group_exists:
            findings.append(OWNERSHIP.finding(f"{p.path} group", f"group {p.group} exists",
                                              "no such group", sev))
        findings.extend(owner_finding(p, e) for e in s.owners.entries)
        findings.extend(_more(OWNERSHIP, p, s.owners, f"owned other than {owner}"))
        findings.extend(mode_finding(p, e) for e in s.modes.entries)
        findings.extend(_more(FILE_MODE, p, s.modes, f"looser than {p.max_file_mode:04o}/"
                              f"{p.max_dir_mode:04o}"))
    return findings


def not_applicable(want: Desired) -> str | None:
    return None if want.paths else "no sensitive path applies to this host's groups"


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    """Owners and modes cannot be looked at while no path is a directory yet."""
    if any(s.root is not None and s.root.kind == "d" for s in seen.paths):
        return {}
    reason = "no sensitive path is a directory yet (see sensitive_paths.directory)"
    return {OWNERSHIP.id: reason, FILE_MODE.id: reason}


CONTROL: Control[Desired, Observed] = Control(
    "sensitive_paths", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped)
