"""sshd settings: rendering a drop-in and comparing with ``sshd -T`` (the effective config).

Several controls own sshd settings (R-LOCK's idle probes, R-TLS's ciphers); each writes its
own drop-in under ``/etc/ssh/sshd_config.d`` and compares against the *effective* values,
which is what a client meets, whatever file they came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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
