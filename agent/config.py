"""Where the agent keeps its files, and its enrolment (the credential, 0600).

State directory (``--state-dir``, ``$BAOMI_AGENT_DIR``, default /var/lib/baomi-agent, 0700):
``enrolment.json`` (collector URL, agent id, host, credential, CA file, inventory groups),
``state.db`` (the baseline), ``status.json`` (what the running agent last reported),
``agent.pid``.  The spool lives in the policy's ``agent.spool_dir``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/baomi-agent"


class AgentConfigError(Exception):
    """A file of the agent is missing or damaged; one line naming it."""


def state_dir(option: str | None = None) -> Path:
    return Path(option or os.environ.get("BAOMI_AGENT_DIR") or DEFAULT_STATE_DIR)


@dataclass(frozen=True)
class Enrolment:
    collector: str
    agent_id: int
    host: str
    credential: str
    ca_file: str | None
    groups: tuple[str, ...]

    def public(self) -> dict[str, object]:
        """Everything but the credential (for status output)."""
        out = asdict(self)
        out.pop("credential")
        out["groups"] = list(self.groups)
        return out


def write_private(path: Path, text: str, *, sync: bool = True) -> None:
    """Write a 0600 file atomically (temporary file in the same folder, fsync unless it is
    only informational, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save_enrolment(directory: Path, e: Enrolment) -> Path:
    path = directory / "enrolment.json"
    data = asdict(e)
    data["groups"] = list(e.groups)
    write_private(path, json.dumps(data, indent=2) + "\n")
    return path


def load_enrolment(directory: Path) -> Enrolment | None:
    """The enrolment, or None if the agent was never enrolled."""
    path = directory / "enrolment.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Enrolment(str(data["collector"]), int(data["agent_id"]), str(data["host"]),
                         str(data["credential"]), data.get("ca_file"),
                         tuple(str(g) for g in data.get("groups") or ()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AgentConfigError(f"{path}: damaged enrolment ({type(exc).__name__}: {exc}); "
                               "enrol again with `baomi agent enroll`") from None
