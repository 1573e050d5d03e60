"""A local user's spy on a lab host: reads every file it can under a directory as it appears.

Run as an unprivileged user (``runuser -u spy -- python3 tmp_spy.py /tmp``). It watches the
directory with inotify (and every sub-directory it is allowed to watch) and, on each create,
write or move, opens the file and prints one JSON line: path, mode, owner and what it could
read (base64), or the error. Directories it may not enter are printed too. It stops on SIGTERM.
Shipped to the host as text: stdlib only (ctypes for inotify).
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import struct
import sys

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_ISDIR = 0x2, 0x8, 0x80, 0x100, 0x40000000
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE


def emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(top: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init()
    watches: dict[int, str] = {}

    def watch(path: str) -> None:
        wd = libc.inotify_add_watch(fd, path.encode(), MASK)
        if wd < 0:
            emit({"dir": path, "error": os.strerror(ctypes.get_errno())})
        else:
            watches[wd] = path

    watch(top)
    emit({"ready": top})
    while True:
        data = os.read(fd, 65536)
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, size = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16:offset + 16 + size].rstrip(b"\0").decode(errors="replace")
            offset += 16 + size
            path = os.path.join(watches.get(wd, "?"), name)
            if mask & IN_ISDIR:
                if mask & IN_CREATE:
                    watch(path)
                continue
            record: dict[str, object] = {"file": path}
            try:
                st = os.lstat(path)
                record["mode"] = f"{st.st_mode & 0o7777:04o}"
                record["uid"] = st.st_uid
                with open(path, "rb") as f:
                    record["data"] = base64.b64encode(f.read(65536)).decode()
            except OSError as exc:
                record["error"] = exc.strerror
            emit(record)


if __name__ == "__main__":
    main(sys.argv[1])
