"""Write an output file so that nothing else is ever clobbered (the write protocol).

Why: the only copy of a crash is often the file next to the one being
written.  On main, ``collect`` silently replaced an earlier dump (its default
``-o dump.tsd``), ``symbols attach K.tsp d.tsd -o d.tsd`` cut a 15 MB dump to
the pack, a symlink planted at ``out.tsd.part`` redirected a write, two
imports to one ``-o`` left a file that failed ``verify``, and ``--force`` on
``/dev/full`` replaced the device node.  Every command that writes a file
goes through here (docs/RELIABILITY.md, "Write protocol"):

1. :func:`check_output` before any work: ``-o`` is not a directory, not one
   of the inputs (same inode, whatever the path), not an existing file
   unless ``--force``, and never anything but a regular file (no device
   node, FIFO or symlink is replaced, even with ``--force``).
2. :func:`atomic_output` writes to a temporary file created ``O_EXCL |
   O_NOFOLLOW`` with a random name in the output's own directory, fsyncs it,
   then publishes it in one step: ``link`` (fails if the name appeared
   meanwhile) without ``--force``, ``rename`` over a regular file with it.
   On any failure (ENOSPC, an exception, Ctrl-C) the temporary file is
   removed: no partial output is ever left under the output's name.
3. :func:`claim_output` is for ``collect``, whose output must survive a kill
   mid-write (every record saved is kept): the file is created new
   (``O_EXCL | O_NOFOLLOW``) and written in place.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import StorageError, TsubakiError

__all__ = ["check_output", "atomic_output", "claim_output"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise TsubakiError(f"{path}: {e.strerror or e}") from None


def check_output(output: Path, force: bool, *inputs: Path) -> None:
    """Refuse ``output`` (one line) before any work if writing it could destroy something.

    :raises TsubakiError: a directory, a missing directory, one of
        ``inputs``, an existing file without ``force``, or not a regular file.
    """
    output = Path(output)
    st = _lstat(output)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise TsubakiError(f"{output}: is a directory; give a file name with -o")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise TsubakiError(f"{output}: directory {parent} does not exist")
    if st is None:
        return
    for src in inputs:
        try:
            s = os.stat(src)
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino) or (
                stat.S_ISLNK(st.st_mode) and os.path.exists(output) and os.path.samefile(src, output)):
            raise TsubakiError(f"{output}: output would overwrite its own input {src}")
    if stat.S_ISLNK(st.st_mode):
        raise TsubakiError(f"{output}: is a symbolic link; refusing to write through it")
    if not stat.S_ISREG(st.st_mode):
        raise TsubakiError(f"{output}: is not a regular file (a device, FIFO or socket); "
                           "refusing to replace it")
    if not force:
        raise TsubakiError(f"{output}: already exists; use --force to replace it")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | _CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(output: Path) -> tuple[Path, int]:
    """A new file next to ``output``: created O_EXCL|O_NOFOLLOW, so never someone's link."""
    for _ in range(100):
        tmp = output.with_name(f".{output.name}.{os.urandom(6).hex()}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644)
        except FileExistsError:
            continue
        except OSError as e:
            raise StorageError(f"cannot create a file in {output.parent}: {e.strerror or e}") from None
        return tmp, fd
    raise StorageError(f"cannot create a temporary file next to {output}")


@contextmanager
def atomic_output(output: Path, *, force: bool = False, inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``output`` atomically.

    The temporary file exists (empty) when yielded; writers may open it by
    name (``open(tmp, "wb")``).  Nothing is published if the body raises.

    :raises TsubakiError: :func:`check_output` refused, or the output
        appeared (without ``force``) or turned into a non-file meanwhile.
    :raises StorageError: fsync or publishing failed (disk full, I/O error).
    """
    output = Path(output)
    check_output(output, force, *inputs)
    tmp, fd = _temp_name(output)
    os.close(fd)
    published = False
    try:
        yield tmp
        try:
            fd = os.open(tmp, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise StorageError(f"writing {output}: {e.strerror or e}") from None
        _publish(tmp, output, force, inputs)
        published = True
        _fsync_dir(output.parent if str(output.parent) else Path("."))
    finally:
        if not published:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _publish(tmp: Path, output: Path, force: bool, inputs: tuple[Path, ...]) -> None:
    if not force:
        try:
            os.link(tmp, output)  # atomic "create if absent": a concurrent writer loses cleanly
        except FileExistsError:
            raise TsubakiError(f"{output}: already exists (written meanwhile by another command?); "
                               "use --force to replace it") from None
        except OSError as e:
            if e.errno not in (1, 38, 95):  # EPERM, ENOSYS, EOPNOTSUPP: no hard links here
                raise StorageError(f"publishing {output}: {e.strerror or e}") from None
        else:
            os.unlink(tmp)
            return
    check_output(output, True, *inputs)  # again, just before: still a regular file (or absent)
    if not force and _lstat(output) is not None:
        raise TsubakiError(f"{output}: already exists; use --force to replace it")
    try:
        os.rename(tmp, output)
    except OSError as e:
        raise StorageError(f"publishing {output}: {e.strerror or e}") from None


def claim_output(output: Path, *, force: bool = False, inputs: tuple[Path, ...] = ()) -> Path:
    """Create ``output`` new (O_EXCL|O_NOFOLLOW) for a writer that writes it in place.

    With ``force`` an existing *regular file* is removed first; anything
    else is refused.  The file is left empty for the writer to open.

    :raises TsubakiError: :func:`check_output` refused, or the name was taken meanwhile.
    """
    output = Path(output)
    check_output(output, force, *inputs)
    if force and _lstat(output) is not None:
        os.unlink(output)
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644)
    except FileExistsError:
        raise TsubakiError(f"{output}: already exists (created meanwhile?); use --force to replace it") from None
    except OSError as e:
        raise StorageError(f"cannot create {output}: {e.strerror or e}") from None
    os.close(fd)
    return output
