"""The collector's key in root's ``authorized_keys`` on a fleet host (shell text, pure).

Fleet hosts are not trusted: ``/root/.ssh`` or ``authorized_keys`` may be a link someone
planted to make root write elsewhere.  So nothing is followed: a link (or anything but a
directory / regular file) there is refused naming it, the new file is made with ``mktemp``
in the folder itself, owned (``chown -h``) and moded on the new file before it is visible, the
folder is re-checked just before one ``rename(2)``, which replaces the name and never writes
through it.  Lines of other keys are kept; a previous line of the same collector (its marker
comment) is replaced.
"""

from __future__ import annotations

import shlex

SSH_DIR = "/root/.ssh"
AUTHORIZED = f"{SSH_DIR}/authorized_keys"


def authorized_test(line: str) -> str:
    """Shell test: the line is in root's authorized_keys, and neither the folder nor the file
    is a link (a linked file is never "done": the fix refuses it, naming it)."""
    return (f"[ ! -L {SSH_DIR} ] && [ -d {SSH_DIR} ] && [ ! -L {AUTHORIZED} ] && "
            f"[ -f {AUTHORIZED} ] && grep -qxF {shlex.quote(line)} {AUTHORIZED}")


def authorize(line: str, comment: str) -> str:
    """Shell: put LINE in root's authorized_keys instead of any line ending with COMMENT."""
    q = shlex.quote
    refuse_dir = (f"if [ -L {SSH_DIR} ] || {{ [ -e {SSH_DIR} ] && [ ! -d {SSH_DIR} ]; }}; "
                  f"then echo \"{SSH_DIR} is a link or not a directory: refused, nothing "
                  "written (remove it, then deploy again)\" >&2; rm -f \"${tmp:-}\"; exit 1; fi")
    return "\n".join([
        "set -e",
        "umask 077",
        "tmp=",
        refuse_dir,
        f"[ -d {SSH_DIR} ] || mkdir -m 0700 {SSH_DIR}",
        f"if [ -L {AUTHORIZED} ] || {{ [ -e {AUTHORIZED} ] && [ ! -f {AUTHORIZED} ]; }}; "
        f"then echo \"{AUTHORIZED} is a link or not a regular file: refused, nothing written"
        "\" >&2; exit 1; fi",
        f"tmp=$(mktemp {SSH_DIR}/.authorized_keys.XXXXXX)",
        f"{{ if [ -f {AUTHORIZED} ]; then grep -v -- {q(' ' + comment)}'$' {AUTHORIZED} "
        f"|| true; fi; printf '%s\\n' {q(line)}; }} > \"$tmp\"",
        "chown -h root:root \"$tmp\"",
        "chmod 0600 \"$tmp\"",
        refuse_dir,
        f"mv -fT \"$tmp\" {AUTHORIZED}",
    ])
