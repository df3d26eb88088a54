"""Where the `full` method's trainer keeps its epoch checkpoints: a folder of this process in
the temporary directory, removed when training ends, and by the next run when this one was
killed (a SIGKILL skips every cleanup; a checkpoint of a base model is hundreds of MB).

Usage: with checkpoint_space() as folder: ...
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# embedtune-checkpoints-<pid>-<8 random characters>; a run across processes shares
# embedtune-checkpoints-<run id> beside them (`distributed.checkpoint_folder`), never matched.
PREFIX = "embedtune-checkpoints-"
OWN = re.compile(rf"{PREFIX}(\d+)-\w{{8}}")


@contextmanager
def checkpoint_space() -> Iterator[Path]:
    """A fresh folder for this process's checkpoints in the temporary directory, removed when
    training ends; the folders of killed runs (their process gone) are removed first."""
    root = Path(tempfile.gettempdir())
    remove_stale_checkpoints(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_checkpoints(root: Path) -> None:
    """Remove this user's checkpoint folders under `root` whose process no longer runs."""
    for folder in root.glob(f"{PREFIX}*"):
        found = OWN.fullmatch(folder.name)
        if found and not _running(int(found[1])) and _ours(folder):
            shutil.rmtree(folder, ignore_errors=True)


def _ours(folder: Path) -> bool:
    return folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == os.getuid()


def _running(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there: never clean
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
