"""The operating system's side: running as an unprivileged user, a port nothing listens on."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534


@contextmanager
def unprivileged(cwd: Path) -> Iterator[None]:
    """Run the block as a user that permission bits bind: root writes anywhere, so when the
    tests run as root the block runs as `nobody`, with `cwd` (the test's folder, whose parents
    nobody may enter) open to it. Read relative to `cwd` inside."""
    if os.geteuid() != 0:
        yield
        return
    cwd.chmod(0o755)
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
