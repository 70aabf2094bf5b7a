"""Durable, hijack-proof file writes: the one place geotag makes temporaries and renames them.

A new file is written under an unpredictable temporary name in the target's folder (same file
system, so the rename is atomic), created exclusively (`tempfile.mkstemp`: O_CREAT|O_EXCL|O_NOFOLLOW,
mode 0600), fsynced, renamed onto the target, and the folder is fsynced so the rename survives a
power cut: a reader sees the old file or the complete new one, never half of one.

A co-user who owns the folder can swap names in it while we work, so nothing is done by a path a
symlink could redirect: mode, owner and times are set through the open descriptor (fchmod, fchown,
utime(fd)), and just before and after the rename the name is checked to still be the very file we
wrote (same device and inode); otherwise `UnsafeWrite` is raised and nothing is reported as written.
A symlink at the target is replaced by the new file (the rename never writes through it).

The rule every command keeps (README, Outputs): a file geotag writes whole goes through a temp and a
rename here, so a link at its name is replaced, never followed; a folder geotag writes into and a file it
appends to must not be a symlink: `real_dir` and `open_append` refuse one with one OutputError line.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from geotag.errors import OutputError

TEMP_SUFFIX = ".geotag-tmp"
"""Every temporary geotag makes ends so: a stray one left by a killed run is recognisable."""


class UnsafeWrite(OSError):
    """A name we wrote was swapped under us (a symlink or another file planted in the folder)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EPERM, message)


DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "StorageFull")


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT, also as Arrow or safetensors report it (their own types, with the OS text)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(exc) for text in DISK_FULL_TEXTS)


def _prefix(target: Path) -> str:
    name = target.name
    while len(os.fsencode(name)) > 200:  # NAME_MAX is 255: leave room for the random part
        name = name[: len(name) // 2]
    return f".{name}."


def new_temp(target: Path, suffix: str = TEMP_SUFFIX) -> tuple[int, Path]:
    """An exclusively created, unpredictable hidden temp file beside `target`: (open fd, path)."""
    folder = target.parent if str(target.parent) else Path(".")
    fd, name = tempfile.mkstemp(dir=folder, prefix=_prefix(target), suffix=suffix)
    return fd, Path(name)


def new_temp_dir(target: Path) -> Path:
    """A private (0700, unpredictable) folder beside `target`, for writers that must create the file
    themselves (exiftool's `-o`); the file is renamed out of it onto `target`."""
    parent = target.parent if str(target.parent) else Path(".")
    return Path(tempfile.mkdtemp(dir=parent, prefix=_prefix(target), suffix=TEMP_SUFFIX))


def default_mode() -> int:
    """0666 less the umask, read without changing it (os.umask would race other threads)."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    return 0o644


def open_own_file(path: Path) -> int:
    """Open a file we just created, refusing a symlink or hard-linked name (UnsafeWrite)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeWrite(f"{path.name} was replaced by a symlink while it was written") from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise UnsafeWrite(f"{path.name} was replaced while it was written")
    return fd


def copy_attributes(fd: int, st: os.stat_result) -> None:
    """Give the open file `st`'s owner (when allowed), permission bits and times (to the ns), all
    through the descriptor. Owner first: chown clears setuid/setgid bits."""
    now = os.fstat(fd)
    if (now.st_uid, now.st_gid) != (st.st_uid, st.st_gid):
        with suppress(OSError):
            os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def is_same_file(fd: int, path: Path) -> bool:
    """Does `path` (not followed) name the file open as `fd`?"""
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk (OSError when that fails: the data may not be there)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort on file systems that cannot fsync folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_checked(fd: int, tmp: Path, target: Path, *, sync_dir: bool = True) -> None:
    """Rename `tmp` onto `target` if `tmp` is still the file open as `fd`; afterwards `target`
    must be that file. UnsafeWrite otherwise (the swapped-in name is never reported as written)."""
    if not is_same_file(fd, tmp):
        raise UnsafeWrite(f"{tmp.name} was replaced before it could be renamed; {target.name} left alone")
    os.replace(tmp, target)
    if not is_same_file(fd, target):
        raise UnsafeWrite(f"{target.name} was swapped during the rename; check the folder")
    if sync_dir:
        fsync_dir(target.parent)


def replace_atomically(tmp: Path, target: Path, *, sync_dir: bool = True) -> None:
    """Rename the finished `tmp` onto `target` (checked: see replace_checked)."""
    fd = open_own_file(tmp)
    try:
        replace_checked(fd, tmp, target, sync_dir=sync_dir)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create `path` (must not exist, never through a symlink) with `data`, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def open_append_nofollow(path: Path, mode: int = 0o600) -> int:
    """Open a log to append to (read/write, O_APPEND), never through a symlink: an existing regular
    file, or a new one created exclusively (so a dangling link at the name is refused with EEXIST,
    not created at its target). OSError (ELOOP for a link) otherwise."""
    flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
    return fd


@contextmanager
def _committed_temp(
    path: Path, *, sync: bool, mode: int | None, written_by_name: bool
) -> Iterator[tuple[int, Path]]:
    """An exclusive temp beside `path` (fd, name); on a clean exit it replaces `path` (checked rename),
    on an exception it is removed. A temp written by name must still be the file we created."""
    fd, tmp = new_temp(path)
    try:
        os.fchmod(fd, default_mode() if mode is None else mode)
        yield fd, tmp
        if written_by_name and not is_same_file(fd, tmp):
            raise UnsafeWrite(f"{tmp.name} was replaced while it was written; {path.name} left alone")
        if sync:
            os.fsync(fd)
        replace_checked(fd, tmp, path, sync_dir=sync)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: Path, *, sync: bool = True, mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a binary file to write a whole new `path` through (no name is ever reopened); on a clean
    exit it replaces `path`, on an exception it is removed and `path` keeps what it held."""
    with (
        _committed_temp(path, sync=sync, mode=mode, written_by_name=False) as (fd, _),
        os.fdopen(os.dup(fd), "wb") as fh,
    ):
        yield fh
        fh.flush()


@contextmanager
def atomic_path(path: Path, *, sync: bool = True) -> Iterator[Path]:
    """Like atomic_file for libraries that only write to a name (GDAL, safetensors): the yielded
    name was created exclusively with an unpredictable name; the rename is checked."""
    with _committed_temp(path, sync=sync, mode=None, written_by_name=True) as (_, tmp):
        yield tmp


@contextmanager
def atomic_new_name(path: Path, *, sync: bool = True) -> Iterator[Path]:
    """For writers that must create the file themselves (exiftool -o, GDAL): a name that does not
    exist yet, inside a private folder beside `path`; the file found there afterwards is checked
    (regular, not a link), fsynced and renamed onto `path`; the folder is removed either way."""
    folder = new_temp_dir(path)
    tmp = folder / f"new{path.suffix}"
    try:
        yield tmp
        finish_new_file(tmp, path, sync=sync)
    finally:
        discard_temp_dir(folder)


def finish_new_file(tmp: Path, path: Path, *, sync: bool = True, st: os.stat_result | None = None) -> None:
    """Check, (give `st`'s attributes,) fsync and rename a file a library wrote at `tmp`."""
    fd = open_own_file(tmp)
    try:
        if st is not None:
            copy_attributes(fd, st)
        else:
            os.fchmod(fd, default_mode())
        if sync:
            os.fsync(fd)
        replace_checked(fd, tmp, path, sync_dir=sync)
    finally:
        os.close(fd)


def discard_temp_dir(folder: Path) -> None:
    """Remove a private temp folder and what is in it (never following a link planted there)."""
    with suppress(OSError):
        for entry in os.scandir(folder):
            with suppress(OSError):
                os.unlink(entry.path)
    with suppress(OSError):
        os.rmdir(folder)


def link_refused(path: Path) -> OutputError:
    """The one line for a symlink found where geotag writes a folder (or appends to a file)."""
    return OutputError(
        f"{path} is a symbolic link: geotag does not write through links (a planted link could redirect "
        "the output); remove it or give the real path"
    )


def real_dir(path: Path, *, parents: bool = False) -> Path:
    """The folder `path`, created (mode 0777 less the umask) when missing; a symlink at its name, or a
    file, is refused with one OutputError line, so nothing is ever written into a folder a link names.
    `parents`: create missing parent folders too (the user's own path; only the last name is checked)."""
    path = Path(path)
    try:
        if parents and not os.path.lexists(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path)  # never follows a link at the last name: EEXIST
    except FileExistsError:
        pass
    except OSError as exc:
        raise OutputError(f"cannot create the folder {path}: {exc.strerror or exc}") from exc
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise link_refused(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path} is a file, not a folder")
    return path


def check_not_link(path: Path) -> Path:
    """Refuse (one OutputError line) a symlink at `path`, which geotag would write into or append to."""
    if Path(path).is_symlink():
        raise link_refused(Path(path))
    return Path(path)


def open_append(path: Path) -> BinaryIO:
    """Open a log geotag appends to (created when missing) without following a link at its name:
    a symlink, a hard-linked name or anything but a regular file is refused with one OutputError line."""
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, default_mode()
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(Path(path)) from exc
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise OutputError(f"{path} is not a plain file of its own (a device, or a hard link): not written")
    return os.fdopen(fd, "ab")


def read_own_file(path: Path) -> bytes | None:
    """The bytes of a regular file geotag wrote earlier (None when there is none); a symlink at its
    name is refused (never read through), like `open_append`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(Path(path)) from exc
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutputError(f"{path} is not a plain file")
        return fh.read()


def write_file(path: Path, data: bytes, *, sync: bool = True) -> None:
    """A whole new `path` holding `data` (atomic_file: a link at the name is replaced, not followed)."""
    with atomic_file(path, sync=sync) as fh:
        fh.write(data)


TEMP_NAME = re.compile(r"^\.(.+)\.[A-Za-z0-9_]+" + re.escape(TEMP_SUFFIX) + "$")
"""The names `new_temp` and `new_temp_dir` give: a dot, the target's name, a dot, mkstemp's random part."""


def remove_stale_temps(folder: Path, targets: re.Pattern[str]) -> list[str]:
    """Remove the temps a killed run left in `folder` for targets whose names `targets` matches in full
    (geotag's own naming only: `.<target>.<random>.geotag-tmp`); links and anything else are left
    alone. Returns the names removed. Only for folders one run owns (a training run's folder), where no
    other writer can be at work."""
    removed = []
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            m = TEMP_NAME.match(entry.name)
            if m is None or not targets.fullmatch(m[1]) or entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)  # fd-based: never follows a link inside
            elif entry.is_file(follow_symlinks=False):
                with suppress(OSError):
                    os.unlink(entry.path)
            else:
                continue
            removed.append(entry.name)
    return sorted(removed)
