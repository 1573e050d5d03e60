"""Ship baomi to hosts without internet: wheels built on the controller, a venv on the host.

Lab hosts (and many real servers) have no route to PyPI; the controller has one.  So:

1. :func:`build` (controller, at prepare time): the dependencies of ``baomi[EXTRA]`` are
   collected once into ``CACHE/deps-KEY`` (``pip wheel``), where KEY digests the project's
   ``pyproject.toml``, the extra, the controller's Python tag and pip's constraints file (the
   environment's lock of versions, when pip is configured with one); the resolved versions
   are written beside them (``lock.txt``).  The baomi wheel itself is built from a private
   copy of the sources (never in the shared working tree) into ``CACHE/baomi-DIGEST``, DIGEST
   being the sources' digest, so an unchanged tree reuses the same wheel, byte for byte.
   Both are linked into ``CACHE/sets/MANIFEST``; MANIFEST digests every wheel's name and
   content.
   The tree is this checkout, or ``$BAOMI_WHEEL_SOURCE`` (an installed baomi has no sources
   to build from; a frozen copy keeps a deploy reproducible while the checkout is edited).
2. :func:`install` (pyinfra): upload that set (``files.sync``: only changed files travel),
   then, unless ``PREFIX/NAME`` already points at a venv made from the same MANIFEST, make a
   new venv ``PREFIX/NAME.venvs/MANIFEST`` (``python3 -m venv``; ensurepip comes with
   Debian's python3-venv), ``pip install --no-index --find-links`` into it, and switch the
   ``PREFIX/NAME`` link to it atomically.  A failed install leaves the running venv alone;
   the previous venv is kept for a manual rollback, older ones are removed.

Wheels with compiled code are only valid for the interpreter they were built for: the host's
``python3`` must have the controller's Python tag (``cpython-311-x86_64``), checked before
anything is uploaded (a host that differs is refused with both tags named).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.operations import files

from baomi.deploy.common import op_name, refuse, shell_if

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "/opt/baomi"
REMOTE_WHEELS = "/var/cache/baomi/wheels"
MANIFEST_FILE = ".baomi-manifest"
_BUILD_TIMEOUT = 1800
KEEP = 3  # cache entries of each kind kept (the ones in use among them)


class WheelError(Exception):
    """The wheels could not be built on the controller (the message names what and why)."""


@dataclass(frozen=True)
class WheelSet:
    """Every wheel ``baomi[extra]`` needs, in one local folder, and its manifest digest."""

    extra: str
    directory: Path
    files: tuple[str, ...]
    manifest: str
    python_tag: str
    lock: tuple[str, ...]  # name==version of every wheel

    @property
    def requirement(self) -> str:
        return f"baomi[{self.extra}]" if self.extra else "baomi"


def python_tag() -> str:
    """The interpreter the wheels are built for: implementation, version and machine."""
    return f"{sys.implementation.cache_tag}-{platform.machine()}"


def cache_root() -> Path:
    """``$BAOMI_WHEEL_CACHE``, else ``~/.cache/baomi/wheels``."""
    env = os.environ.get("BAOMI_WHEEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "baomi" / "wheels"


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def deps_key(pyproject: bytes, extra: str, tag: str, constraints: bytes = b"") -> str:
    """What names a dependency cache: a change in any part means a fresh download.

    Only the parts of ``pyproject.toml`` that choose dependencies count (the base list, the
    extra's list, the build requirements), so an unrelated edit keeps the cache.
    """
    data = tomllib.loads(pyproject.decode())
    project = data.get("project", {})
    lists = project.get("optional-dependencies", {})
    chosen = {"dependencies": project.get("dependencies", []),
              "extra": [d for e in extra_names(extra) for d in lists.get(e, [])],
              "build": data.get("build-system", {}).get("requires", [])}
    return _digest([json.dumps(chosen, sort_keys=True).encode(), extra.encode(),
                    tag.encode(), constraints])[:16]


def extra_names(extra: str) -> list[str]:
    """The extras of EXTRA: one name, or several joined by commas (``collector,admin``, what
    a collector host that also audits and offboards the fleet needs); none for ``""``."""
    return [e for e in extra.split(",") if e]


def manifest_of(wheels: Iterable[tuple[str, bytes]]) -> str:
    """The digest of a set of wheels (file name, content), independent of their order."""
    lines = sorted(f"{name} {hashlib.sha256(data).hexdigest()}" for name, data in wheels)
    return _digest(line.encode() for line in lines)[:32]


_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-.+\.whl$")


def lock_lines(files: Iterable[str]) -> tuple[str, ...]:
    """``name==version`` of each wheel file name (PEP 427 names), sorted."""
    out = []
    for f in files:
        m = _WHEEL_NAME.match(f)
        if not m:
            raise WheelError(f"{f}: not a wheel file name (NAME-VERSION-...whl)")
        out.append(f"{m['name'].lower().replace('_', '-')}=={m['version']}")
    return tuple(sorted(out))


def package_dirs(pyproject: bytes) -> list[str]:
    """The source folders the distribution is built from (``tool.setuptools.package-dir``)."""
    data = tomllib.loads(pyproject.decode())
    mapping = data.get("tool", {}).get("setuptools", {}).get("package-dir", {"": "."})
    return sorted({str(v).split("/")[0] for v in mapping.values()})


def _source_paths(root: Path) -> list[Path]:
    pyproject = (root / "pyproject.toml").read_bytes()
    paths = [root / "pyproject.toml"]
    paths += [p for p in (root / "README.md", root / "LICENSE") if p.exists()]
    for top in package_dirs(pyproject):
        for dirpath, dirnames, filenames in os.walk(root / top):
            # Links to folders (baomi/deploy -> ../deploy) are kept as links, not walked.
            links = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and d not in links)
            paths += [Path(dirpath) / n for n in filenames + links
                      if not n.endswith((".pyc", ".pyo"))]
    return sorted(set(paths))


def source_digest(root: Path) -> str:
    """Digest of every file (or link) the baomi wheel is built from, with its path."""
    parts: list[bytes] = []
    for path in _source_paths(root):
        parts.append(str(path.relative_to(root)).encode())
        parts.append(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
    return _digest(parts)[:16]


def copy_sources(root: Path, dest: Path) -> None:
    """A copy of what the baomi wheel is built from (also a frozen BAOMI_WHEEL_SOURCE)."""
    for path in _source_paths(root):
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            os.symlink(os.readlink(path), target)
        else:
            shutil.copy2(path, target)


def _pip_constraints() -> bytes:
    """The content of the constraints file pip is configured with, if any (a version lock)."""
    found = os.environ.get("PIP_CONSTRAINT", "")
    if not found:
        try:
            out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                                 capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        m = re.search(r"^\S*constraint='([^']+)'", out, re.M)
        found = m[1] if m else ""
    parts = [Path(p).read_bytes() for p in found.split() if Path(p).is_file()]
    return b"\n".join(parts)


def _pip_wheel(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise WheelError(f"{what}: pip wheel took longer than {_BUILD_TIMEOUT} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-2:]
        raise WheelError(f"{what}: pip wheel failed: {' | '.join(errors[-2:])}")


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_into(final: Path, build: Callable[[Path], None]) -> None:
    """Run ``build(tmp)`` in a temporary folder beside FINAL, then rename it to FINAL."""
    tmp = Path(tempfile.mkdtemp(prefix=".part-", dir=final.parent))
    try:
        build(tmp)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def source_root() -> Path:
    """The baomi source tree to build from: ``$BAOMI_WHEEL_SOURCE``, else this checkout."""
    env = os.environ.get("BAOMI_WHEEL_SOURCE")
    root = Path(env) if env else ROOT
    if not (root / "pyproject.toml").is_file():
        raise WheelError(f"{root}: no pyproject.toml; baomi is not running from a checkout "
                         "(set BAOMI_WHEEL_SOURCE to a baomi source tree)")
    return root


def build(extra: str = "", root: Path | None = None, cache_dir: Path | None = None,
          ) -> WheelSet:
    """Every wheel ``baomi[extra]`` needs, from the cache when the inputs did not change."""
    root = root or source_root()
    cache_dir = cache_dir or cache_root()
    pyproject = (root / "pyproject.toml").read_bytes()
    extras = tomllib.loads(pyproject.decode()).get("project", {}).get(
        "optional-dependencies", {})
    missing = [e for e in extra_names(extra) if e not in extras]
    if missing:
        raise WheelError(f"{root / 'pyproject.toml'}: no extra {missing[0]!r} "
                         f"(have {', '.join(sorted(extras)) or 'none'})")
    tag = python_tag()
    with _locked(cache_dir):
        deps = cache_dir / f"deps-{deps_key(pyproject, extra, tag, _pip_constraints())}"
        if not deps.is_dir():
            def build_deps(tmp: Path) -> None:
                copy_sources(root, tmp / "src")
                _pip_wheel(["-w", str(tmp / "wheels"), f"{tmp / 'src'}[{extra}]" if extra
                            else str(tmp / "src")], f"dependencies of baomi[{extra}]")
                shutil.rmtree(tmp / "src")
                for whl in (tmp / "wheels").glob("baomi-*.whl"):
                    whl.unlink()
                wheels = sorted(p.name for p in (tmp / "wheels").glob("*.whl"))
                (tmp / "lock.txt").write_text("".join(f"{line}\n"
                                                      for line in lock_lines(wheels)))
            _build_into(deps, build_deps)
        own = cache_dir / f"baomi-{source_digest(root)}"
        if not own.is_dir():
            def build_own(tmp: Path) -> None:
                copy_sources(root, tmp / "src")
                _pip_wheel(["--no-deps", "-w", str(tmp / "wheels"), str(tmp / "src")],
                           "the baomi wheel")
                shutil.rmtree(tmp / "src")
            _build_into(own, build_own)
        wheels = sorted([*(deps / "wheels").glob("*.whl"), *(own / "wheels").glob("*.whl")])
        manifest = manifest_of((p.name, p.read_bytes()) for p in wheels)
        stage = cache_dir / "sets" / manifest
        if not stage.is_dir():
            stage.parent.mkdir(parents=True, exist_ok=True)

            def link_all(tmp: Path) -> None:
                for p in wheels:
                    os.link(p, tmp / p.name)
            _build_into(stage, link_all)
        for used in (deps, own, stage):
            os.utime(used)  # the age prune() goes by is the last use, not the creation
        prune(cache_dir, in_use={deps, own, stage})
    names = tuple(p.name for p in wheels)
    return WheelSet(extra, stage, names, manifest, tag, lock_lines(names))


def prune(cache_dir: Path, in_use: set[Path], keep: int = KEEP) -> list[Path]:
    """Remove all but the KEEP most recently used entries of each kind (deps, baomi, sets),
    never those IN_USE; an edited checkout would otherwise leave one baomi wheel per deploy."""
    removed = []
    for pattern in ("deps-*", "baomi-*", "sets/*"):
        entries = sorted((p for p in cache_dir.glob(pattern) if p.is_dir() and p not in in_use),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[max(0, keep - len({p for p in in_use if p.match(pattern)})):]:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


_BUILT: dict[str, WheelSet] = {}
# pyinfra prepares hosts in greenlets of one process (threading is gevent's there): without
# this lock a second host would wait on the cache's flock inside the same process, blocking
# the loop that the first host's pip needs: a deadlock.
_BUILDING = threading.Lock()


def built(extra: str) -> WheelSet:
    """:func:`build` once per controller process (each deploy file asks for it per host)."""
    with _BUILDING:
        if extra not in _BUILT:
            _BUILT[extra] = build(extra)
        return _BUILT[extra]


def built_or_exit(extra: str, command: str) -> WheelSet:
    """:func:`built`, or the deploy ends (exit 2) with COMMAND's one line saying why."""
    try:
        return built(extra)
    except WheelError as exc:
        sys.stderr.write(f"{command}: {exc}\n")
        raise SystemExit(2) from None


def venv_paths(name: str, manifest: str, prefix: str = PREFIX) -> tuple[str, str]:
    """(the stable link PREFIX/NAME, the venv it points at for this manifest)."""
    return f"{prefix}/{name}", f"{prefix}/{name}.venvs/{manifest[:16]}"


def installed_test(name: str, manifest: str, prefix: str = PREFIX) -> str:
    """Shell test: the link points at a complete venv made from exactly this manifest."""
    link, venv = venv_paths(name, manifest, prefix)
    target = venv.rsplit("/", 1)[1]
    return (f"[ \"$(readlink {shlex.quote(link)})\" = {shlex.quote(name + '.venvs/' + target)} ]"
            f" && grep -qx {manifest} {shlex.quote(venv + '/' + MANIFEST_FILE)} 2>/dev/null")


def install_script(name: str, wheels: WheelSet, wheel_dir: str, prefix: str = PREFIX) -> str:
    """Make the venv from the uploaded wheels, then switch the link to it (atomic ``mv -T``).

    The manifest file is written last, so a venv without it is an interrupted install and is
    made again.  The previous venv stays (rollback: point the link back); older ones go.
    """
    link, venv = venv_paths(name, wheels.manifest, prefix)
    q = shlex.quote
    venvs = f"{prefix}/{name}.venvs"
    new_link = f"{link}.link-new"
    return "\n".join([
        "set -e",
        # Code the service's own user runs (the collector's): readable by all whatever the
        # login umask is (the baseline's login_defaults makes it 027 for SSH sessions too).
        "umask 022",
        f"mkdir -p {q(venvs)}",
        f"rm -rf {q(venv)}",
        f"python3 -m venv {q(venv)}",
        f"{q(venv)}/bin/pip install -q --no-index --no-cache-dir --disable-pip-version-check "
        f"--find-links {q(wheel_dir)} {q(wheels.requirement)}",
        f"printf '%s\\n' {wheels.manifest} > {q(venv + '/' + MANIFEST_FILE)}",
        f"previous=$(readlink {q(link)} 2>/dev/null || true)",
        f"ln -sfn {q(name + '.venvs/' + venv.rsplit('/', 1)[1])} {q(new_link)}",
        f"mv -Tf {q(new_link)} {q(link)}",
        f"cd {q(venvs)}",
        "for d in *; do",
        f"  case \"{name}.venvs/$d\" in \"$(readlink {q(link)})\"|\"$previous\") ;; "
        "*) rm -rf \"$d\" ;; esac",
        "done",
    ])


def host_tag_script() -> str:
    """Prints the host's Python tag (as :func:`python_tag`) and whether venv works there."""
    return ("python3 -c 'import sys, platform; "
            "print(sys.implementation.cache_tag + \"-\" + platform.machine())' 2>/dev/null "
            "|| echo none; python3 -c 'import ensurepip, venv' 2>/dev/null "
            "&& echo venv || echo no-venv")


def host_problem(host_output: str, wheels: WheelSet) -> str | None:
    """Why this host cannot take the wheels (None when it can), from host_tag_script()."""
    lines = host_output.split()
    tag = lines[0] if lines else "none"
    if tag == "none":
        return "python3 is not installed on the host (install python3 and python3-venv)"
    if tag != wheels.python_tag:
        return (f"the host's python3 is {tag}; the wheels were built on the controller for "
                f"{wheels.python_tag} (run the deploy from a controller with the same Python)")
    if "venv" not in lines[1:]:
        return "python3 cannot make a venv on the host (install python3-venv)"
    return None


# --- on the host (pyinfra) ----------------------------------------------------------------


class HostPython(FactBase[str]):
    """The host's Python tag and whether it can make a venv (:func:`host_tag_script`)."""

    default = str

    def command(self) -> str:
        return host_tag_script()

    def process(self, output: list[str]) -> str:
        return "\n".join(output)


def install(control: str, name: str, wheels: WheelSet, prefix: str = PREFIX) -> object | None:
    """Operations putting ``wheels`` in the venv PREFIX/NAME on the current host.

    Returns the install operation (its ``did_change`` tells a service to restart), or None
    when the host was refused (an operation failing with the reason is added instead).
    """
    problem = host_problem(host.get_fact(HostPython), wheels)
    if problem:
        refuse(name=op_name(control, f"python for {name}"), message=f"{host.name}: {problem}")
        return None
    wheel_dir = f"{REMOTE_WHEELS}/{name}"
    files.sync(name=op_name(control, f"wheels {wheel_dir}"), src=str(wheels.directory),
               dest=wheel_dir, user="root", group="root", mode="0644", dir_mode="0755",
               delete=True)
    link, venv = venv_paths(name, wheels.manifest, prefix)
    return shell_if(name=op_name(control, f"venv {link} ({wheels.requirement})"),
                    check=installed_test(name, wheels.manifest, prefix),
                    command=install_script(name, wheels, wheel_dir, prefix),
                    reason=f"{link} -> {venv} already made from these wheels")
