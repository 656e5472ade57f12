"""Crash-safe output: build in a temporary sibling, flush it to disk, rename it into place.

An export takes minutes and its source may have taken hours; a kill, a power cut or a full
disk must leave either the old output or the complete new one, never a half-written mix.
Everything vauban writes goes through :func:`building_dir` (directories) or
:func:`write_file` (single files):

- the temporary sibling sits in the same directory as the target (so the final rename is
  atomic on one file system) and its name carries the writer's pid, so a later run can tell
  the leftovers of a killed process from a build in progress and remove them;
- files and directories are fsynced before the rename, and the parent directory after it,
  so the rename never reaches the disk before the data it points to;
- replacing an existing directory uses Linux's atomic ``renameat2(RENAME_EXCHANGE)`` where
  available, so there is no moment at which the target is missing; elsewhere the old
  directory is set aside, the new one renamed in, and the old one removed;
- a full disk, a read-only file system or a permission problem becomes a one-line
  :class:`VaubanError` naming the path and the fix, with the temporary files removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import VaubanError

TEMP_TAG = ".vauban-tmp-"
_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)")  # how Rust libraries (safetensors) report errno
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h


def temp_name(target: Path) -> str:
    """The prefix of ``target``'s temporary siblings written by this process."""
    return f".{target.name}{TEMP_TAG}{os.getpid()}-"


def _pid_of(name: str) -> int | None:
    rest = name.split(TEMP_TAG, 1)[-1]
    pid = rest.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(target: Path) -> list[Path]:
    """Delete temporary siblings of ``target`` left by processes that no longer run."""
    removed: list[Path] = []
    parent = target.absolute().parent
    if not parent.is_dir():
        return removed
    for leftover in parent.glob(f".{glob.escape(target.name)}{TEMP_TAG}*"):
        pid = _pid_of(leftover.name)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def fsync_path(path: Path) -> None:
    """Flush a file's or directory's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot fsync a directory; the data is synced
        if not (path.is_dir() and err.errno in (errno.EINVAL, errno.ENOTSUP, errno.EBADF)):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ordinary_modes(root: Path) -> None:
    """Give files and folders the modes a plain write would (mkdtemp/mkstemp and safetensors
    make them private to the owner), so an export can be shared like any other directory."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder) / name, 0o777 & ~mask)
        for name in files:
            os.chmod(Path(folder) / name, 0o666 & ~mask)


def fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``, macOS ``renamex_np``); False where the
    system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # Windows has no such call
        return False
    if hasattr(libc, "renameat2"):
        at_fdcwd = -100
        result = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    elif hasattr(libc, "renamex_np"):
        result = libc.renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def publish_dir(tmp: Path, target: Path, overwrite: bool = False) -> None:
    """Move the finished ``tmp`` to ``target``; an existing ``target`` is replaced as a whole
    if it is empty or ``overwrite`` is set (checked again here: it may have appeared since)."""
    ordinary_modes(tmp)
    fsync_tree(tmp)
    if not overwrite and target.is_dir() and any(target.iterdir()):
        raise VaubanError(f"{target} appeared while writing it; choose another path or overwrite")
    if not target.exists():
        os.rename(tmp, target)  # fails (ENOTEMPTY/EEXIST) rather than merge into a new arrival
    elif _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
    else:
        backup = Path(tempfile.mkdtemp(prefix=temp_name(target), dir=target.parent))
        os.rename(target, backup / "old")
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(backup / "old", target)
            raise
        finally:
            shutil.rmtree(backup, ignore_errors=True)
    fsync_path(target.absolute().parent)


def describe(err: BaseException, target: Path) -> str:
    """A one-line message for a write failure, with what to do about it."""
    code = getattr(err, "errno", None)
    if code is None and (found := _OS_ERROR_IN_TEXT.search(str(err))):
        code = int(found.group(1))
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device while writing {target}; free some space or choose another path"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write {target} ({os.strerror(code)}); choose a writable path"
    if isinstance(err, OSError) and err.strerror:
        return f"could not write {target}: {err.strerror}"
    lines = str(err).strip().splitlines()
    return f"could not write {target}: {lines[0] if lines else type(err).__name__}"


def is_write_error(err: BaseException) -> bool:
    """An OSError, or a library's error that wraps one (safetensors reports "os error N")."""
    return isinstance(err, OSError) or bool(_OS_ERROR_IN_TEXT.search(str(err)))


@contextlib.contextmanager
def writing(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield ``target`` as an absolute path, its folder made and dead writers' temporary files
    next to it removed; a write error inside the block (:func:`is_write_error`) becomes a
    one-line :class:`VaubanError` naming ``target`` (:func:`describe`), other errors pass."""
    out = Path(target).absolute()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out)
        yield out
    except Exception as err:
        if is_write_error(err) and not isinstance(err, VaubanError):
            raise VaubanError(describe(err, out)) from None
        raise


@contextlib.contextmanager
def building_dir(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target``; on success it becomes ``target``.

    An existing non-empty ``target`` is replaced only with ``overwrite``. On any error the
    temporary directory is removed and ``target`` is left as it was; write errors become a
    :class:`VaubanError`.
    """
    tmp: Path | None = None
    try:
        with writing(target) as out:
            tmp = Path(tempfile.mkdtemp(prefix=temp_name(out), dir=out.parent))
            yield tmp
            publish_dir(tmp, out, overwrite)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_file(target: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)``, flush it, and rename it to ``target`` (replacing it atomically)."""
    tmp: Path | None = None
    try:
        with writing(target) as out:
            fd, name = tempfile.mkstemp(prefix=temp_name(out), dir=out.parent)
            os.close(fd)
            tmp = Path(name)
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())
            fsync_path(tmp)
            os.replace(tmp, out)
            tmp = None
            fsync_path(out.parent)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return out
