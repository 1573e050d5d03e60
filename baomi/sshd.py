"""sshd settings: rendering a drop-in and comparing with ``sshd -T`` (the effective config).

Several controls own sshd settings (R-LOCK's idle probes, R-TLS's ciphers); each writes its
own drop-in under ``/etc/ssh/sshd_config.d`` and compares against the *effective* values,
which is what a client meets, whatever file they came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# What a client meets: the effective configuration for a root login from loopback.
SSHD_T = "sshd -T -C user=root,host=localhost,addr=127.0.0.1"


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
