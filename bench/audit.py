"""Audit time: `baomi audit` on 10 lab hosts and on 1, beside its peer measured in the same run,
plain `pytest checks` over the same hosts serially (one process, one host after another).

    .venv/bin/python bench/audit.py                 # 10 hosts (8 servers + 2 workstations)
    .venv/bin/python bench/audit.py --hosts 4       # a smaller lab

The lab is fresh (nothing applied), so every check reads its host and most fail with
evidence: the slowest case for the reports.  Each figure is the wall time of the whole command
(start-up, ssh connections with ControlMaster, every check, merging, the JSON/JUnit/HTML
reports).  The 1-minute load average is printed beside each figure: this machine's two cores
are shared, and the ratio to the serial peer is the figure that travels.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from baomi.lab.lifecycle import Request  # noqa: E402
from baomi.lab.testing import LabHandle, running_lab  # noqa: E402

BAOMI = [sys.executable, "-m", "baomi"]


def timed(cmd: list[str]) -> tuple[float, int, float]:
    """Seconds, exit status, load average at the end."""
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd[:4])}… exit {done.returncode}:\n{done.stdout[-2000:]}"
                 f"\n{done.stderr[-2000:]}")
    return seconds, done.returncode, os.getloadavg()[0]


def run(lab: LabHandle, folder: Path, hosts: list[str], jobs: int | None) -> dict[str, float]:
    limit = [a for h in hosts for a in ("--limit", h)]
    audit = [*BAOMI, "audit", "-i", str(lab.inventory), "--policy", str(ROOT / "policy.yaml"),
             "--report", str(folder), *(["--jobs", str(jobs)] if jobs else []), *limit]
    plain = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--no-header",
             "-o", "addopts=", "checks", f"--hosts={','.join(hosts)}",
             f"--ssh-config={lab.ssh_config}", f"--inventory={lab.inventory}",
             f"--policy={ROOT / 'policy.yaml'}"]
    out: dict[str, float] = {}
    for name, cmd in (("audit", audit), ("pytest serial", plain)):
        seconds, status, load = timed(cmd)
        out[name] = seconds
        print(f"  {len(hosts):2} host(s)  {name:14} {seconds:6.1f} s  (exit {status}, "
              f"load {load:.1f})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=None,
                        help="baomi audit --jobs (default: the audit's own, one per CPU)")
    args = parser.parse_args()
    servers = args.hosts - args.hosts // 5
    request = Request(servers=servers, workstations=args.hosts - servers)
    with running_lab(f"aub{os.getpid() % 1_000_000}", request) as lab, \
            tempfile.TemporaryDirectory(prefix="baomi-audit-bench-") as tmp:
        print(f"lab of {len(lab.names)} hosts up in {lab.up_seconds:.1f} s; "
              f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
        one = run(lab, Path(tmp), lab.names[:1], args.jobs)
        many = run(lab, Path(tmp), lab.names, args.jobs)
        print(f"audit of {len(lab.names)} hosts: {many['audit']:.1f} s "
              f"({many['pytest serial'] / many['audit']:.1f}x faster than serial pytest); "
              f"1 host: {one['audit']:.1f} s (serial pytest {one['pytest serial']:.1f} s)")


if __name__ == "__main__":
    main()
