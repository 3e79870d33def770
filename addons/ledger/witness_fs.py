"""The witness's append-only attribute (`chattr +a`): the local half of a witness the gateway's
user can append to but not rewrite.

With FS_APPEND_FL set, even the file's owner can only append: truncating, rewriting or deleting
needs CAP_LINUX_IMMUTABLE (root), so a compromised gateway process, or an operator with only the
gateway's account, cannot roll the witness back together with the ledger. ext2/3/4, XFS, Btrfs and
tmpfs (Linux >= 6.0) support the flag; other filesystems report None ("cannot say").
"""

from __future__ import annotations

import array
import fcntl
import os
from pathlib import Path

# linux/fs.h: FS_IOC_GETFLAGS / FS_IOC_SETFLAGS take an int (the ioctl numbers say long, the
# kernel reads an int), FS_APPEND_FL is the append-only bit.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_APPEND_FL = 0x00000020


def _flags(fd: int) -> int | None:
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
    except OSError:
        return None
    return int(buf[0])


def is_append_only(path: Path) -> bool | None:
    """True/False, or None when the filesystem does not support file attributes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = _flags(fd)
    finally:
        os.close(fd)
    return None if flags is None else bool(flags & FS_APPEND_FL)


def ensure_append_only(path: Path) -> bool | None:
    """Set the append-only flag when this process may (root); then report what the file has."""
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = _flags(fd)
        if flags is None:
            return None
        if not flags & FS_APPEND_FL:
            try:
                fcntl.ioctl(fd, FS_IOC_SETFLAGS, array.array("i", [flags | FS_APPEND_FL]), True)
            except OSError:
                return False  # not permitted (no CAP_LINUX_IMMUTABLE): the operator sets it
            flags = _flags(fd)
    finally:
        os.close(fd)
    return None if flags is None else bool(flags & FS_APPEND_FL)
