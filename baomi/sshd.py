"""sshd settings: rendering a drop-in and comparing with ``sshd -T`` (the effective config).

Several controls own sshd settings (R-LOCK's idle probes, R-TLS's ciphers); each writes its
own drop-in under ``/etc/ssh/sshd_config.d`` and compares against the *effective* values,
which is what a client meets, whatever file they came from.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass

# What a client meets: the effective configuration for a root login from loopback.
SSHD_T = "sshd -T -C user=root,host=localhost,addr=127.0.0.1"

# Each ``Match`` line of the main file and the drop-ins becomes a connection its criteria
# select (first non-negated pattern of each; wildcards filled in; an Address network's own
# address; a Group through one of its accounts; User default root, Address 192.0.2.1), printed
# as ``context FILE:LINE SPEC`` or ``unevaluated FILE:LINE WHY`` (mawk: POSIX awk only).
_MATCH_AWK = r"""
function example(p, wild,   c, n, parts, r, s) {
  c = index(p, "/"); if (c) return substr(p, 1, c - 1)
  if (index(p, ":")) { gsub(/[*?]/, "1", p); return p }
  n = split(p, parts, "."); r = ""
  for (c = 1; c <= 4; c++) {
    s = (c <= n) ? parts[c] : wild
    if (s == "" || s ~ /[*?]/) s = wild
    r = r (c > 1 ? "." : "") s
  }
  return r
}
{
  line = $0; c = index(line, ":"); file = substr(line, 1, c - 1); line = substr(line, c + 1)
  c = index(line, ":"); where = file ":" substr(line, 1, c - 1); text = substr(line, c + 1)
  gsub(/"/, "", text); gsub(/=/, " ", text)
  n = split(text, w, /[ \t]+/)
  user = "root"; host = "client.invalid"; addr = "192.0.2.1"; extra = ""; why = ""
  i = 1; while (i <= n && tolower(w[i]) != "match") i++
  for (i++; i <= n; ) {
    k = tolower(w[i]); if (k == "" || k == "all") { i++; continue }
    v = w[i + 1]; i += 2
    m = split(v, pats, ","); p = ""
    for (j = 1; j <= m; j++) if (substr(pats[j], 1, 1) != "!") { p = pats[j]; break }
    if (p == "") continue
    if (k == "user") { gsub(/[*?]/, "x", p); user = p }
    else if (k == "host") { gsub(/[*?]/, "x", p); host = p }
    else if (k == "address") addr = example(p, "1")
    else if (k == "localaddress") extra = extra ",laddr=" example(p, "1")
    else if (k == "localport") { gsub(/[*?]/, "2", p); extra = extra ",lport=" p }
    else if (k == "rdomain") extra = extra ",rdomain=" p
    else if (k == "group") {
      if (p !~ /^[A-Za-z0-9._-]+$/) { why = "Group pattern " p " names no one group"; continue }
      g = ""; cmd = "getent group " p; cmd | getline g; close(cmd)
      split(g, gf, ":"); member = gf[4]; sub(/,.*/, "", member)
      if (member == "" && gf[3] != "") {
        cmd = "getent passwd"
        while ((cmd | getline pw) > 0) {
          split(pw, pf, ":"); if (pf[4] == gf[3]) { member = pf[1]; break }
        }
        close(cmd)
      }
      if (member == "") why = "no account is in group " p; else user = member
    }
    else why = "criterion " k " is not evaluated"
  }
  if (why != "") print "unevaluated", where, why
  else print "context", where, "user=" user ",host=" host ",addr=" addr extra
}
"""

MATCH_CONTEXTS = (
    "for f in /etc/ssh/sshd_config $(ls /etc/ssh/sshd_config.d/*.conf 2>/dev/null | "
    "LC_ALL=C sort); do grep -HniE '^[[:space:]]*match[[:space:]]' \"$f\"; done | "
    f"awk {shlex.quote(_MATCH_AWK)} | while read -r kind where spec; do "
    'echo "$kind $where $spec"; [ "$kind" = context ] && sshd -T -C "$spec" 2>&1; done; true')


@dataclass(frozen=True)
class MatchContext:
    """The effective configuration for one connection a Match block selects."""

    where: str              # FILE:LINE of the Match line
    spec: str               # the ``sshd -T -C`` connection spec, or why it was not evaluated
    values: dict[str, str] | None  # None: not evaluated (``spec`` says why)

    @property
    def user(self) -> str:
        fields = dict(part.partition("=")[::2] for part in self.spec.split(","))
        return fields.get("user", "")


def parse_contexts(text: str) -> list[MatchContext]:
    """The output of :data:`MATCH_CONTEXTS` → one :class:`MatchContext` per Match line."""
    found: list[MatchContext] = []
    lines: list[str] = []

    def close() -> None:
        if found and found[-1].values is not None:
            found[-1].values.update(parse_effective("\n".join(lines)))
        lines.clear()

    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind in ("context", "unevaluated") and rest.count(" ") >= 1 and ":" in rest:
            close()
            where, _, spec = rest.partition(" ")
            found.append(MatchContext(where, spec, {} if kind == "context" else None))
        elif found:
            lines.append(line)
    close()
    return found


def parse_effective(text: str) -> dict[str, str]:
    """``sshd -T`` output → {lower-case keyword: value}; a keyword printed on several lines
    (listenaddress, hostkey, ...) keeps all its values, comma-separated, in order."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        key, value = key.lower(), value.strip()
        if key and value:
            out[key] = f"{out[key]},{value}" if key in out else value
    return out


# sshd -T prints some values under older spellings.
_SYNONYMS = {"prohibit-password": "without-password"}


def _norm(value: str) -> str:
    value = value.strip().lower()
    return _SYNONYMS.get(value, value)


@dataclass(frozen=True)
class SshdSettings:
    values: dict[str, str]

    def render(self) -> str:
        return "".join(f"{key} {value}\n" for key, value in self.values.items())

    def differences(self, effective: dict[str, str]) -> Iterator[tuple[str, str, str]]:
        """(key, wanted, found) for each setting whose effective value differs."""
        for key, want in self.values.items():
            got = effective.get(key.lower(), "")
            if _norm(got) != _norm(want):
                yield key, want, got
