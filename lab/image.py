"""The lab's Debian root filesystem: built once with mmdebstrap, cached, extracted once.

Lab hosts have no outbound network, so every package a later deploy needs is baked in
here. The tarball is keyed by its recipe (suite, variant, package list, recipe version):
changing the list builds a new image, anything else reuses the cached one. Host keys
and the machine-id are stripped from the image so that each host gets fresh ones.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from baomi.lab.errors import LabError

SUITE = "bookworm"
VARIANT = "minbase"
# The machine's own package sources: deb822 on cloud images, one-line sources.list where
# Debian's installer wrote it (mmdebstrap reads either).
SOURCES = next((p for p in (Path("/etc/apt/sources.list.d/debian.sources"),
                            Path("/etc/apt/sources.list")) if p.exists() and p.stat().st_size),
               Path("/etc/apt/sources.list.d/debian.sources"))
# Bump when the build steps change in a way the package list does not show.
RECIPE_VERSION = 1

# Everything deploys and checks need inside a host (see issue 3); sorted for the key.
PACKAGES: tuple[str, ...] = tuple(
    sorted(
        {
            "openssh-server",
            "openssh-sftp-server",  # pyinfra uploads and the backup host use SFTP
            "sudo",
            "python3",
            # Agent and collector deploys make venvs from shipped wheels (ensurepip lives here).
            "python3-venv",
            "systemd",
            "systemd-sysv",
            "dbus",
            "kmod",
            "dconf-cli",
            "dconf-gsettings-backend",
            "gsettings-desktop-schemas",
            "libglib2.0-bin",
            "cryptsetup",
            "usbguard",
            "umockdev",
            "restic",
            # The backup host serves each client's repository append-only (rclone serve restic).
            "rclone",
            "auditd",
            "nftables",
            "libpam-pwquality",
            # pam_pwquality's dictionary check refuses every password without its dictionary
            # (a Recommends, which mmdebstrap leaves out); R-PWD's deploy installs it too.
            "cracklib-runtime",
            "procps",
            "iproute2",
            "cron",
            "at",
            "passwd",
            "login",
            # Controls III (R-SEC, R-LOG): virus protection with offline signatures, logs
            # forwarded over TLS, SSH guessing banned.
            "clamav",
            "clamav-daemon",
            "rsyslog",
            "rsyslog-gnutls",
            "fail2ban",
        }
    )
)

# Run inside the image at the end of the build: no baked-in identity, sshd on at boot.
_CUSTOMIZE = (
    'rm -f "$1"/etc/ssh/ssh_host_*'
    ' && : > "$1"/etc/machine-id && rm -f "$1"/var/lib/dbus/machine-id'
    ' && chroot "$1" systemctl enable ssh.service'
    ' && rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages'
)


def recipe_key(recipe: Mapping[str, object]) -> str:
    """A short digest of an image recipe: what names a cached image (container or VM)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cache_key(
    packages: tuple[str, ...] = PACKAGES, suite: str = SUITE, variant: str = VARIANT
) -> str:
    """A short digest of the recipe; the tarball's name, so a new list means a new build."""
    return recipe_key({"suite": suite, "variant": variant, "packages": sorted(set(packages)),
                       "recipe": RECIPE_VERSION})


@dataclass(frozen=True)
class Image:
    """A built image: its tarball and the extracted tree hosts overlay on (read-only)."""

    key: str
    tarball: Path
    rootfs: Path
    built_seconds: float | None  # set when this call built it, for the figures


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialize builds and extracts between concurrent labs sharing one cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def require_tools(what: str, *tools: str) -> None:
    """Fail early, naming the missing program, before a build starts half-way."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise LabError(f"{what}: {tool} is not installed (run scripts/setup)")


def mmdebstrap_command(target: Path, packages: Sequence[str], *, options: Sequence[str] = (),
                       setup_hooks: Sequence[str] = (),
                       customize_hooks: Sequence[str] = ()) -> list[str]:
    """The mmdebstrap call for one lab image from this machine's sources (pure, for tests).

    TARGET is a directory or a tarball; hooks run in mmdebstrap's shell with $1 = the root.
    """
    argv = ["mmdebstrap", *options, f"--variant={VARIANT}",
            "--include=" + ",".join(sorted(set(packages)))]
    argv += [f"--setup-hook={hook}" for hook in setup_hooks]
    argv += [f"--customize-hook={hook}" for hook in customize_hooks]
    return [*argv, SUITE, str(target), str(SOURCES)]


def run_mmdebstrap(argv: list[str], what: str) -> None:
    """Run a build from mmdebstrap_command; a failure is one line with its last output."""
    require_tools(what, "mmdebstrap")
    if not SOURCES.exists():
        raise LabError(f"{what}: no package sources at {SOURCES} (nor /etc/apt/sources.list)")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what}: mmdebstrap timed out after 1800 s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise LabError(f"{what} failed (mmdebstrap): " + " | ".join(tail))


def build_tarball(out: Path, packages: tuple[str, ...] = PACKAGES) -> None:
    """Run mmdebstrap from this machine's package sources into OUT (written atomically)."""
    tmp = out.with_name(out.name + ".part.tar.zst")
    try:
        run_mmdebstrap(mmdebstrap_command(tmp, packages, options=["--quiet"],
                                          customize_hooks=[_CUSTOMIZE]), "image build")
    except LabError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.rename(out)


def _extract(tarball: Path, dest: Path) -> None:
    """Unpack once into DEST; a marker file says the tree is complete."""
    tmp = dest.with_name(dest.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    proc = subprocess.run(
        ["tar", "--zstd", "-x", "-p", "--numeric-owner", "--xattrs", "--xattrs-include=*",
         "-f", str(tarball), "-C", str(tmp)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabError(f"cannot extract {tarball}: {proc.stderr.strip()[:200]}")
    tmp.rename(dest)
    (dest.parent / (dest.name + ".ok")).touch()


def ensure_image(cache_dir: Path, packages: tuple[str, ...] = PACKAGES) -> Image:
    """The cached image for PACKAGES, building and extracting what is missing."""
    key = cache_key(packages)
    tarball = cache_dir / f"rootfs-{SUITE}-{key}.tar.zst"
    rootfs = cache_dir / f"rootfs-{SUITE}-{key}"
    built: float | None = None
    with file_lock(cache_dir / f".lock-{key}"):
        if not tarball.exists():
            t0 = time.monotonic()
            build_tarball(tarball, packages)
            built = time.monotonic() - t0
        if not (cache_dir / (rootfs.name + ".ok")).exists():
            if rootfs.exists():
                shutil.rmtree(rootfs)
            _extract(tarball, rootfs)
    return Image(key=key, tarball=tarball, rootfs=rootfs, built_seconds=built)
