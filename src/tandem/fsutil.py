"""Atomic writes: a crash leaves either the old state or the new one, never half of it.

Temp files and folders are named ``.<target>.<pid>@<host>~<random>.tmp``, so that a sweep (see
:func:`stale_temp` and :meth:`tandem.registry.Registry.add`) can tell a writer that died (SIGKILL,
power loss) from one still at work. What they become gets the permissions of any file or folder the
user creates (0666 or 0777 less the umask), not those of a private temp file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: A temp entry this old whose writer cannot be identified (written before writers were recorded) is stale.
LEGACY_TEMP_AGE_S = 24 * 3600
_TEMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]{1,32})~[A-Za-z0-9_]+\.tmp$")
_LEGACY_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def host_tag() -> str:
    """This host's name as recorded in temp names and registry rows (letters, digits and '-', 32 at most)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def writer_tag() -> str:
    """``<pid>@<host>``: who is writing, for a later sweep to tell whether the writer is still alive."""
    return f"{os.getpid()}@{host_tag()}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie (a killed, unreaped process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def writer_gone(pid: int, host: str) -> bool:
    """Whether the writer ``pid`` on ``host`` has certainly stopped: it ran on this host and is not alive.
    A writer on another host (a shared filesystem) is never judged gone: its pid means nothing here."""
    return host == host_tag() and not pid_alive(pid)


def stale_temp(path: Path) -> bool:
    """Whether ``path`` is a temp file or folder of :func:`atomic_file`/:func:`atomic_dir` whose writer is
    gone (see :func:`writer_gone`), an unattributed one over :data:`LEGACY_TEMP_AGE_S` old, or the trash
    of a deleted registry version (``.<version>.deleting-<hex>``)."""
    match = _TEMP_RE.match(path.name)
    if match:
        return writer_gone(int(match["pid"]), match["host"])
    if ".deleting-" in path.name:  # a deleted bundle's trash (renamed after the commit): never needed again
        return True
    if _LEGACY_TEMP_RE.match(path.name):
        try:
            return time.time() - path.lstat().st_mtime > LEGACY_TEMP_AGE_S
        except OSError:
            return False
    return False


def current_umask() -> int:
    """The process's umask, read from /proc (no change, so no race with other threads); else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _prefix(target: Path) -> str:
    return f".{target.name}.{writer_tag()}~"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets mode 0666 less the umask, as ``open()`` would give it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with contextlib.suppress(FileNotFoundError):  # the block may have replaced the file: chmod what is there
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp directory beside ``path``; rename it to ``path`` if the block succeeds.

    ``path`` must not exist yet: bundles are never overwritten. The folder gets mode 0777 less the umask,
    as ``mkdir`` would give it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp_path, 0o777 & ~current_umask())
        yield tmp_path
        os.rename(tmp_path, target)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
