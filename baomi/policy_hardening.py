"""Policy sections of the kernel-level baseline: core dumps, login defaults, kernel settings.

Part of the policy loader (:mod:`baomi.policy` calls these builders and holds the results in
:class:`baomi.policy.Policy`); kept apart so the loader's module stays readable.  Every value
is validated here, with FILE:LINE:COL through :mod:`baomi.yamlread`, like every section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from baomi.yamlread import Context, Invalid, MapReader, boolean, choice, integer, listof, text


@dataclass(frozen=True)
class CoreDumps:
    """R-ACL, R-DST: a crashing process that read customer files leaves no copy of them."""

    enabled: bool = True


HASH_METHODS = ("YESCRYPT", "SHA512")


@dataclass(frozen=True)
class LoginDefaults:
    """R-ACL: new files are never world-readable; R-PWD: how hard a stolen hash is to crack."""

    umask: str = "027"
    hash_method: str = "YESCRYPT"
    yescrypt_cost_factor: int = 8     # login.defs YESCRYPT_COST_FACTOR (Debian's default: 5)
    sha_crypt_rounds: int = 65536     # SHA_CRYPT_MIN_ROUNDS = MAX_ROUNDS when SHA512


# R-SEC 入侵检测: the kernel's own defences.  Values as sysctl prints them.
DEFAULT_SYSCTL: tuple[tuple[str, str], ...] = (
    ("fs.protected_symlinks", "1"),
    ("fs.protected_hardlinks", "1"),
    ("fs.protected_fifos", "2"),
    ("fs.protected_regular", "2"),
    ("kernel.kptr_restrict", "2"),
    ("kernel.dmesg_restrict", "1"),
    ("kernel.yama.ptrace_scope", "1"),
    ("kernel.unprivileged_bpf_disabled", "1"),
    ("kernel.sysrq", "0"),
    ("dev.tty.ldisc_autoload", "0"),
    ("net.core.bpf_jit_harden", "2"),
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
    ("net.ipv4.conf.all.secure_redirects", "0"),
    ("net.ipv4.conf.default.secure_redirects", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
    ("net.ipv4.conf.all.accept_source_route", "0"),
    ("net.ipv4.conf.default.accept_source_route", "0"),
    ("net.ipv4.conf.all.rp_filter", "1"),
    ("net.ipv4.conf.default.rp_filter", "1"),
    ("net.ipv4.conf.all.log_martians", "1"),
    ("net.ipv4.conf.default.log_martians", "1"),
    ("net.ipv4.icmp_echo_ignore_broadcasts", "1"),
    ("net.ipv4.tcp_syncookies", "1"),
    ("net.ipv6.conf.all.accept_redirects", "0"),
    ("net.ipv6.conf.default.accept_redirects", "0"),
    ("net.ipv6.conf.all.accept_source_route", "0"),
    ("net.ipv6.conf.default.accept_source_route", "0"),
)
PROTOCOLS = ("dccp", "sctp", "rds", "tipc")


@dataclass(frozen=True)
class Kernel:
    """R-SEC: kernel settings (one sysctl.d file) and network protocols nobody here uses."""

    enabled: bool = True
    sysctl: tuple[tuple[str, str], ...] = DEFAULT_SYSCTL
    refuse_protocols: tuple[str, ...] = PROTOCOLS


def core_dumps(ctx: Context, r: MapReader) -> CoreDumps:
    out = CoreDumps(enabled=r.get("enabled", boolean, CoreDumps.enabled))
    r.done()
    return out


def umask_value(node: yaml.Node) -> str:
    """An octal umask that takes every permission from others ("027", "077")."""
    value = text(r"0?[0-7]{3}", "an octal umask like \"027\"", 4)(node)
    if not value.endswith("7"):
        raise Invalid(f"umask {value} leaves new files readable or writable by everyone",
                      "R-ACL needs the last digit 7, e.g. \"027\"")
    return value[-3:]


def login_defaults(ctx: Context, r: MapReader) -> LoginDefaults:
    d = LoginDefaults()
    out = LoginDefaults(
        umask=r.get("umask", umask_value, d.umask),
        hash_method=r.get("hash_method", choice(HASH_METHODS), d.hash_method),
        yescrypt_cost_factor=r.get("yescrypt_cost_factor", integer(5, 11),
                                   d.yescrypt_cost_factor),
        sha_crypt_rounds=r.get("sha_crypt_rounds", integer(5000, 999_999_999, "rounds"),
                               d.sha_crypt_rounds),
    )
    r.done()
    return out


SYSCTL_KEY = r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+"


def _sysctl(ctx: Context, r: MapReader) -> tuple[tuple[str, str], ...] | None:
    node = r.raw("sysctl")
    if node is None:
        return None
    if not isinstance(node, yaml.MappingNode):
        ctx.report(node, "kernel.sysctl must be a mapping of 'key: value'",
                   "e.g. kernel.kptr_restrict: 2")
        return None
    out: list[tuple[str, str]] = []
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if not re.fullmatch(SYSCTL_KEY, key) or ".." in key:
            ctx.report(key_node, f"kernel.sysctl: {key!r} is not a sysctl key",
                       "dotted names as `sysctl -a` prints them, e.g. fs.protected_symlinks")
            continue
        if any(k == key for k, _ in out):
            ctx.report(key_node, f"kernel.sysctl: {key} is given twice", "give each key once")
            continue
        value = str(value_node.value) if isinstance(value_node, yaml.ScalarNode) else ""
        if not re.fullmatch(r"-?[0-9]+( -?[0-9]+)*", value):
            ctx.report(value_node, f"kernel.sysctl.{key}: {value or 'this'} is not a number",
                       "whole numbers, as sysctl prints them")
            continue
        out.append((key, value))
    return tuple(out)


def kernel(ctx: Context, r: MapReader) -> Kernel:
    d = Kernel()
    sysctl = _sysctl(ctx, r)
    protocols = r.raw("refuse_protocols")
    out = Kernel(
        enabled=r.get("enabled", boolean, d.enabled),
        sysctl=d.sysctl if sysctl is None else sysctl,
        refuse_protocols=d.refuse_protocols if protocols is None else tuple(dict.fromkeys(
            listof(choice(PROTOCOLS))(ctx, protocols, "kernel.refuse_protocols"))),
    )
    r.done()
    return out

