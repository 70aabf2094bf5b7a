"""Input files opened with bounds: regular files only, and never more bytes than a photo can have.

Why: manifests and shards come from other people. A manifest row may name a FIFO (opening it for
reading blocks forever), a device (`/dev/zero` never ends), a folder, a private text file or a zip
member that inflates 2 MB into gigabytes. Every photo geotag reads from a path someone else wrote is
opened here: with O_NONBLOCK (a FIFO swapped in after a check cannot block the open), checked with
fstat on the open descriptor (no race between the check and the read), and read at most
MAX_PHOTO_BYTES. Zip members are checked against their declared size and read through a stream that
stops at the same limit.
"""

from __future__ import annotations

import os
import stat
import zipfile
from typing import IO

MAX_PHOTO_BYTES = 256 * 1024 * 1024
"""The largest photo (file, tar member or zip member) geotag reads: 256 MiB, beyond any camera's."""


class NotAPhotoFile(OSError):
    """The path is no regular file, or is too large to be a photo (a per-file error, never fatal).
    `reason` is a short category for skip counts: "not a regular file", "too large" or "unreadable"."""

    def __init__(self, message: str, reason: str = "not a regular file") -> None:
        super().__init__(message)
        self.reason = reason


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words (for messages and skip counts)."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_size(size: int, what: str, limit: int = MAX_PHOTO_BYTES) -> None:
    if size > limit:
        raise NotAPhotoFile(
            f"{what} is {size:,} bytes, over the {limit // 2**20} MiB limit of a photo", "too large"
        )


def open_regular(path: str | os.PathLike[str], limit: int = MAX_PHOTO_BYTES) -> IO[bytes]:
    """A binary reader of a regular file of at most `limit` bytes; NotAPhotoFile (an OSError) for a
    FIFO, device, socket or folder, or a file too large. A FIFO is never opened blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise NotAPhotoFile(f"{os.fspath(path)} is a folder, not a photo") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAPhotoFile(f"{os.fspath(path)} is {kind_of(st.st_mode)}, not a photo")
        check_size(st.st_size, os.fspath(path), limit)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int = MAX_PHOTO_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (a file that grows while read is cut off)."""
    with open_regular(path, limit) as fh:
        data = fh.read(limit + 1)
    check_size(len(data), os.fspath(path), limit)
    return data


def read_zip_member(archive: zipfile.ZipFile, member: str, limit: int = MAX_PHOTO_BYTES) -> bytes:
    """A zip member's bytes, refused when its declared size is over `limit`, and read as a stream that
    stops after `limit` bytes whatever the header claims (a zip bomb never inflates into memory)."""
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise NotAPhotoFile(f"no member {member} in the zip", "unreadable") from None
    if info.is_dir():
        raise NotAPhotoFile(f"zip member {member} is a folder, not a photo")
    check_size(info.file_size, f"zip member {member}", limit)
    try:
        with archive.open(info) as fh:
            data = fh.read(limit + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as exc:
        raise NotAPhotoFile(f"zip member {member}: {exc}", "unreadable") from None
    check_size(len(data), f"zip member {member}", limit)
    return data
