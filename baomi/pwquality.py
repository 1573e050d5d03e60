"""pam_pwquality's settings: which files libpwquality reads, what they set, what PAM adds.

Kept apart from the R-PWD control (:mod:`baomi.controls.passwords`) the way :mod:`baomi.sshd`
holds sshd's reader: this module knows libpwquality and the PAM password stack, the control
knows the policy.

Where pam_pwquality's settings come from (libpwquality 1.4): the ``*.conf`` files of
``/etc/security/pwquality.conf.d`` in byte order, *then* ``/etc/security/pwquality.conf`` (so
the main file wins over every drop-in), then the module's arguments in ``common-password``
(which win over both).  The first malformed line stops the reading: nothing after it counts.
The observe side therefore asks the library itself for the values it reads (``python3`` +
ctypes on ``libpwquality.so.1``, :data:`LIBRARY_COMMAND`), applies the PAM arguments on top,
and names the file and line that set each value (:func:`read_pwquality`, a mimic of the
library's reader, also the fallback where the host has no python3).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

PWQ_CONF = "/etc/security/pwquality.conf"
PWQ_DIR = PWQ_CONF + ".d"
COMMON_PASSWORD = "/etc/pam.d/common-password"  # noqa: S105 a PAM file path
DEFAULT_DICT = "/var/cache/cracklib/cracklib_dict"
CREDITS = ("dcredit", "ucredit", "lcredit", "ocredit")
# What pam_pwquality uses when nothing sets a value (libpwquality 1.4).
PWQ_DEFAULTS = {"minlen": 8, "minclass": 0, "dcredit": 0, "ucredit": 0, "lcredit": 0,
                "ocredit": 0, "enforcing": 1, "dictcheck": 1}
# PWQ_SETTING_* numbers of pwquality.h, for pwquality_get_int_value.
_PWQ_IDS = {"minlen": 3, "dcredit": 4, "ucredit": 5, "lcredit": 6, "ocredit": 7,
            "minclass": 8, "dictcheck": 15, "enforcing": 17}
_PWQ_INT = ("difok", "minlen", "dcredit", "ucredit", "lcredit", "ocredit", "minclass",
            "maxrepeat", "maxclassrepeat", "maxsequence", "gecoscheck", "dictcheck",
            "usercheck", "usersubstr", "enforcing", "retry")
_PWQ_FLAG = ("enforce_for_root", "local_users_only")
_PWQ_STR = ("badwords", "dictpath")
FILE_MARK = "--- baomi file: "

# Asks libpwquality which values it reads from its configuration (no PAM arguments).
_PWQ_PY = (
    "import ctypes, os\n"
    "try:\n"
    "    lib = ctypes.CDLL('libpwquality.so.1')\n"
    "except OSError:\n"
    "    raise SystemExit(3)\n"
    "lib.pwquality_default_settings.restype = ctypes.c_void_p\n"
    "pwq = ctypes.c_void_p(lib.pwquality_default_settings())\n"
    "print('rc', lib.pwquality_read_config(pwq, None, None))\n"
    f"for name, number in {sorted(_PWQ_IDS.items())!r}:\n"
    "    value = ctypes.c_int()\n"
    "    if lib.pwquality_get_int_value(pwq, number, ctypes.byref(value)) == 0:\n"
    "        print(name, value.value)\n"
    "path = ctypes.c_char_p()\n"
    "lib.pwquality_get_str_value(pwq, 10, ctypes.byref(path))\n"
    f"dictpath = path.value.decode() if path.value else {DEFAULT_DICT!r}\n"
    "print('dict', int(os.path.exists(dictpath + '.pwd')), dictpath)\n"
)
# Read-only commands: every file libpwquality may read (in any order: read_order sorts them as
# the library does), and the library's own reading (rc 3: no python3 or no library).
FILES_COMMAND = (f"for f in $(find {PWQ_DIR} -mindepth 1 -maxdepth 1 -name '*.conf' "
                 f"2>/dev/null) {PWQ_CONF}; do [ -f \"$f\" ] || continue; "
                 f"printf '%s%s\\n' '{FILE_MARK}' \"$f\"; cat \"$f\"; echo; done")
LIBRARY_COMMAND = (f"command -v python3 >/dev/null || exit 3; "
                   f"python3 -c {shlex.quote(_PWQ_PY)}")


@dataclass(frozen=True)
class Line:
    """One line of a configuration file."""

    path: str
    number: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"


@dataclass(frozen=True)
class PwqSetting:
    key: str
    value: str
    line: Line


@dataclass(frozen=True)
class PamLine:
    line: Line
    control: str
    module: str
    args: tuple[str, ...]

    def arg(self, key: str) -> str | None:
        value = None
        for a in self.args:
            name, eq, v = a.partition("=")
            if name.lower() == key and (eq or key in _PWQ_FLAG):
                value = v
        return value


def as_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def parse_files(text: str | None) -> dict[str, str]:
    """:data:`FILES_COMMAND`'s output → {path: content}."""
    files: dict[str, str] = {}
    current: str | None = None
    chunks: list[str] = []
    for raw in (text or "").split("\n"):
        if raw.startswith(FILE_MARK):
            if current is not None:
                files[current] = "\n".join(chunks)
            current, chunks = raw[len(FILE_MARK):], []
        elif current is not None:
            chunks.append(raw)
    if current is not None:
        files[current] = "\n".join(chunks)
    # `cat` then `echo`: drop the separating newline we added.
    return {p: (c[:-1] if c.endswith("\n") else c) for p, c in files.items()}


@dataclass(frozen=True)
class LibraryReading:
    """What libpwquality itself said (:data:`LIBRARY_COMMAND`)."""

    values: dict[str, int]
    rc: int | None        # pwquality_read_config's return: 0, or a PWQ_ERROR_* (negative)
    dictpath: str         # the cracklib dictionary pam_pwquality loads
    dict_present: bool


def parse_library(out: str) -> LibraryReading:
    values: dict[str, int] = {}
    rc = None
    dictpath, present = DEFAULT_DICT, False
    for raw in out.splitlines():
        key, _, value = raw.strip().partition(" ")
        if key == "rc":
            rc = as_int(value)
        elif key == "dict":
            flag, _, path = value.partition(" ")
            present, dictpath = flag == "1", path.strip() or DEFAULT_DICT
        elif key in _PWQ_IDS and (number := as_int(value)) is not None:
            values[key] = number
    return LibraryReading(values, rc, dictpath, present)


def _conf_name_ok(name: str) -> bool:
    """libpwquality's filter: the first '.conf' in the name must end it."""
    at = name.find(".conf")
    return at >= 0 and at + 5 == len(name)


def read_order(files: dict[str, str]) -> list[str]:
    """The files libpwquality reads: drop-ins by byte order of their names, then the main file."""
    dropins = sorted((p for p in files if p.startswith(PWQ_DIR + "/")
                      and _conf_name_ok(p[len(PWQ_DIR) + 1:])),
                     key=lambda p: p.encode())
    return dropins + ([PWQ_CONF] if PWQ_CONF in files else [])


@dataclass(frozen=True)
class PwqReading:
    settings: tuple[PwqSetting, ...]   # every setting read, in reading order
    error: Line | None                 # the line that stopped the reading
    unread: tuple[str, ...]            # files never reached because of it


def _valid(key: str, value: str) -> bool:
    k = key.lower()
    if k in _PWQ_INT:
        return re.fullmatch(r"-?\d+", value) is not None
    return k in _PWQ_FLAG or k in _PWQ_STR


def read_pwquality(files: dict[str, str]) -> PwqReading:
    """Mimic libpwquality's reader: '#' starts a comment, NAME [=] VALUE, stop at an error.

    Used to name the line that set a value; the values themselves come from the library when
    the host has python3 (:class:`LibraryReading`).
    """
    settings: list[PwqSetting] = []
    order = read_order(files)
    for index, path in enumerate(order):
        for number, raw in enumerate(files[path].split("\n"), 1):
            body = raw.split("#", 1)[0].strip()
            if not body:
                continue
            # The name ends at a blank or '='; then blanks and at most one '=' are skipped.
            key = re.split(r"[\s=]", body, maxsplit=1)[0]
            value = re.sub(r"^\s*(=\s*)?", "", body[len(key) + 1:])
            line = Line(path, number, raw)
            if not _valid(key, value):
                return PwqReading(tuple(settings), line, tuple(order[index + 1:]))
            settings.append(PwqSetting(key.lower(), value, line))
    return PwqReading(tuple(settings), None, ())


def pam_lines(pam: str | None) -> list[PamLine]:
    """Active ``password`` lines of common-password, in order."""
    found = []
    for number, raw in enumerate((pam or "").split("\n"), 1):
        body = raw.split("#", 1)[0].strip()
        m = re.match(r"^-?password\s+(\[[^\]]*\]|\S+)\s+(\S+)\s*(.*)$", body)
        if m:
            module = m[2].rsplit("/", 1)[-1]
            found.append(PamLine(Line(COMMON_PASSWORD, number, raw), m[1], module,
                                 tuple(m[3].split())))
    return found


def pwquality_line(pam: str | None) -> PamLine | None:
    return next((p for p in pam_lines(pam) if p.module == "pam_pwquality.so"), None)


def clamp(key: str, value: int) -> int:
    """What the library makes of a value: minlen is at least 6, minclass at most 4."""
    if key == "minlen":
        return max(value, 6)
    if key == "minclass":
        return min(value, 4)
    return value


@dataclass(frozen=True)
class Effective:
    value: int
    source: str   # "default", "FILE:LINE", "libpwquality" or "COMMON_PASSWORD:LINE argument"


def effective(files: dict[str, str], library: dict[str, int] | None,
              pam: str | None) -> dict[str, Effective]:
    """The value pam_pwquality uses for each key of :data:`PWQ_DEFAULTS`, and its source."""
    out: dict[str, Effective] = {k: Effective(v, "default") for k, v in PWQ_DEFAULTS.items()}
    for s in read_pwquality(files).settings:
        if s.key in out:
            out[s.key] = Effective(clamp(s.key, int(s.value)), s.line.where)
    if library is not None:
        # The library's own reading is the truth; ours only names the source.
        for key, value in library.items():
            if key in out and out[key].value != value:
                out[key] = Effective(value, "libpwquality")
    line = pwquality_line(pam)
    if line is not None:
        for key in out:
            arg = line.arg(key)
            if arg is not None and as_int(arg) is not None:
                out[key] = Effective(clamp(key, int(arg)),
                                     f"{line.line.where} argument {key}={arg}")
    return out
