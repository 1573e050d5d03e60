"""Kernel modules refused through ``/etc/modprobe.d``, as ``modprobe`` itself resolves them.

Several controls refuse modules (``usb``: storage on every removable bus; ``kernel``:
uncommon network protocols).  A refusal is ``blacklist M`` (no alias autoload) plus
``install M /bin/false`` (an explicit ``modprobe M`` fails too); the check asks
``modprobe -n -v M``, which prints ``install /bin/false`` only when the refusal is what modprobe
will really do, whichever file says it.
"""

from __future__ import annotations

REFUSED = "install /bin/false"


def refusal(modules: tuple[str, ...]) -> str:
    return "".join(f"blacklist {m}\ninstall {m} /bin/false\n" for m in modules)


def section(module: str) -> str:
    return "modprobe_" + module.replace("-", "_")


def resolve_commands(modules: tuple[str, ...]) -> dict[str, str]:
    """Observe-script sections: ``modprobe -n -v`` of each module (read-only, a dry run)."""
    return {section(m): f"modprobe -n -v {m}" for m in modules}


def loaded_command(modules: tuple[str, ...]) -> str:
    """The modules of the list that are loaded (``no-modules``: the kernel has none)."""
    names = "|".join(m.replace("-", "_") for m in modules)
    return (f"if [ -e /proc/modules ]; then grep -oE '^({names}) ' /proc/modules || true; "
            "else echo no-modules; fi")


def not_refused(resolved: dict[str, str]) -> dict[str, str]:
    """{module: what modprobe would do instead} for each module that is not refused."""
    return {m: out.strip() or "no output" for m, out in resolved.items() if REFUSED not in out}


def parse_loaded(text: str) -> tuple[str, ...] | None:
    if text.strip() == "no-modules":
        return None
    return tuple(line.split()[0] for line in text.splitlines() if line.strip())
