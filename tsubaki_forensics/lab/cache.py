"""The on-disk cache of kernels and crashes, written atomically.

Every entry is built in a hidden temporary directory beside its final place
and renamed into place only when complete, so an interrupted download, a full
disk or a killed QEMU never leaves something that looks like a good entry.
A leftover temporary directory is ignored and removed by the next writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import LabError

__all__ = ["cache_root", "atomic_entry", "entry_is_complete", "entry_lock", "COMPLETE_MARKER"]

# Written last inside an entry: a directory without it is not an entry.
COMPLETE_MARKER = ".complete"
_TMP_PREFIX = ".tmp-"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/tsubaki-forensics`` (``~/.cache`` when unset); ``TSUBAKI_CACHE_DIR`` wins."""
    override = os.environ.get("TSUBAKI_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tsubaki-forensics"


def entry_is_complete(path: Path) -> bool:
    """True when ``path`` was published by :func:`atomic_entry`."""
    return (path / COMPLETE_MARKER).is_file()


def _remove_stale(parent: Path, name: str) -> None:
    """Remove temporary directories of ``name`` whose writer process is gone."""
    for tmp in parent.glob(f"{_TMP_PREFIX}{name}-*"):
        pid = tmp.name.rsplit("-", 2)[-2] if tmp.name.count("-") >= 2 else ""
        if pid.isdigit() and _pid_alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_entry(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` when the block succeeds.

    On any exception the temporary directory is removed and ``final`` is left
    as it was.  If ``final`` exists but is incomplete it is replaced.

    :raises LabError: the cache directory cannot be written (e.g. disk full).
    """
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(parent, final.name)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise LabError(f"cannot write the cache under {parent}: {e.strerror or e}") from e
    try:
        yield tmp
        (tmp / COMPLETE_MARKER).write_text("")
        tmp.chmod(0o755)  # mkdtemp makes 0700; the cache is shared like any ~/.cache entry
        if final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not entry_is_complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer published it first
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabError(f"cannot write cache entry {final}: {e.strerror or e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def entry_lock(final: Path) -> Iterator[None]:
    """Serialise the makers of one entry across processes (pytest sessions running at once).

    The second process waits, then finds the entry complete instead of
    building it again.  The lock file lives beside the entry and is never
    mistaken for it.
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(final.parent / f".lock-{final.name}", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise LabError(f"cannot lock cache entry {final}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
