"""One validated install: write exact content, validate, move into place, roll back, reload.

Every file baomi manages on a host goes through :func:`install_file` (as dev-sec's hardening
roles do with ``validate:``):

- the new content goes to a fresh temp file made by ``mktemp`` in the target's own directory
  (``O_EXCL``: a link planted there is never followed), with its mode and owner set *before*
  it is visible;
- ``validate`` with ``{new}`` in it checks the temp file on its own (``nft -c -f {new}``,
  ``visudo -cf {new}``) before it replaces anything;
- ``validate`` without ``{new}`` checks the whole configuration with the new file in place
  (``sshd -t``): on failure the previous file is put back (or the new one removed) and the
  script exits 1 naming the file and the validator's message;
- the move is one ``rename(2)``: readers see the old file or the new one, never half; a link
  at the target is replaced, not followed;
- ``then`` (a reload) runs only once the file is in place and valid.
"""

from __future__ import annotations

import base64
import shlex


def install_file(path: str, content: str, *, mode: str = "0644", owner: str = "root",
                 group: str = "root", validate: str | None = None,
                 then: str | None = None) -> str:
    """A POSIX sh script that installs ``content`` at ``path`` (see the module docstring)."""
    if not path.startswith("/") or path.endswith("/") or "\n" in path:
        raise ValueError(f"install path {path!r}: an absolute file path")
    if not (len(mode) in (3, 4) and all(c in "01234567" for c in mode)):
        raise ValueError(f"mode {mode!r}: octal like 0644")
    q = shlex.quote(path)
    directory = shlex.quote(path.rsplit("/", 1)[0] or "/")
    data = base64.b64encode(content.encode()).decode()
    lines = [
        "set -e",
        f"mkdir -p {directory}",
        f"new=$(mktemp {directory}/.baomi-new.XXXXXX)",
        'trap \'rm -f "$new"\' EXIT',
        f'printf %s {data} | base64 -d > "$new"',
        f'chmod {mode} "$new"',
        f'chown {shlex.quote(owner)}:{shlex.quote(group)} "$new"',
    ]
    if validate and "{new}" in validate:
        check = validate.replace("{new}", '"$new"')
        lines.append(f'if ! err=$({check} 2>&1); then '
                     f'echo "{_sh_text(validate.split()[0])} rejected {_sh_text(path)}: $err" >&2; '
                     f"exit 1; fi")
        lines.append(f'mv -f "$new" {q}')
    elif validate:
        lines += [
            f"prev=''; if [ -e {q} ] || [ -L {q} ]; then "
            f"prev=$(mktemp {directory}/.baomi-prev.XXXXXX); cp -P -p {q} \"$prev\"; fi",
            f'mv -f "$new" {q}',
            f"if ! err=$({validate} 2>&1); then "
            f'if [ -n "$prev" ]; then mv -f "$prev" {q}; else rm -f {q}; fi; '
            f'echo "{_sh_text(validate.split()[0])} rejected {_sh_text(path)}: $err" >&2; '
            f"exit 1; fi",
            'if [ -n "$prev" ]; then rm -f "$prev"; fi',
        ]
    else:
        lines.append(f'mv -f "$new" {q}')
    lines.append("trap - EXIT")
    if then:
        lines.append(then)
    return "\n".join(lines)


def _sh_text(text: str) -> str:
    """Text safe inside a double-quoted shell string."""
    return "".join(c for c in text if c not in '"$`\\')
