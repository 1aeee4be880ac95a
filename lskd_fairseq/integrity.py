"""Completeness checks for every artifact lskd reads, and the output-path checks for every
folder it writes: one place, one kind of message.

An artifact's writer records what a complete file looks like (a header or manifest: shapes,
dtypes, byte sizes, SHA-256 where hashing is cheap next to making the file). A reader calls
the checks here before it uses the file; a damaged file is refused with one line (an
``ArtifactError``) that names the file, what is wrong and the command that rebuilds it:

    <file> is damaged: 1048576 bytes, its header promises 2000128 (truncated?); rebuild it with `...`

Output folders are checked before any work starts (``check_output_dir``): a file where a
folder is wanted, or a folder lskd cannot write, is refused in one line. A write that runs
out of space fails in one line too (``lskd_fairseq.atomic`` turns ENOSPC into
``OutputError``), and the temporary file is removed, so nothing half-written is left under
a final name.

numpy only (no torch, no fairseq): the vision and study layers use it.
"""

import errno
import hashlib
import json
import os
from typing import Dict, Iterable, Optional, Sequence

from lskd_fairseq.errors import LskdError

__all__ = ["ArtifactError", "OutputError", "file_record", "check_file_record", "check_npy", "check_raw",
           "load_json", "check_output_dir", "is_out_of_space", "sha256_file"]


# an artifact up to this size records (and its readers check) its files' SHA-256; a larger one
# records and checks their sizes only (hashing it would cost about as much as reading it)
HASH_LIMIT_BYTES = 256 << 20


class ArtifactError(LskdError):
    """An offline artifact that is missing, incomplete, damaged or made for something else."""


class OutputError(LskdError):
    """An output path lskd cannot write: a file where a folder is wanted, no permission, a full disk."""


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
    return h.hexdigest()


def _rebuild(rebuild: str) -> str:
    return f"; rebuild it with `{rebuild}`" if rebuild else ""


def damaged(path: str, problem: str, rebuild: str = "") -> ArtifactError:
    return ArtifactError(f"{path} is damaged: {problem}{_rebuild(rebuild)}")


def file_record(path: str, sha256: bool = True) -> Dict[str, object]:
    """What a header records of one finished file: its size, and its SHA-256 when cheap."""
    rec: Dict[str, object] = {"bytes": os.path.getsize(path)}
    if sha256:
        rec["sha256"] = sha256_file(path)
    return rec


def check_file_record(path: str, record: Optional[Dict], rebuild: str = "", verify_hash: bool = True) -> None:
    """Refuse ``path`` when it is missing or differs from its ``file_record`` (size, then hash)."""
    if not os.path.isfile(path):
        raise ArtifactError(f"{path} is missing{_rebuild(rebuild)}")
    if not record:
        return  # written before lskd recorded files: only the checks of its own format apply
    size = os.path.getsize(path)
    if "bytes" in record and size != int(record["bytes"]):
        raise damaged(path, f"{size} bytes, its header promises {record['bytes']}"
                      + (" (truncated?)" if size < int(record["bytes"]) else ""), rebuild)
    if verify_hash and record.get("sha256") and sha256_file(path) != record["sha256"]:
        raise damaged(path, "its SHA-256 differs from the one recorded when it was written (changed on disk)",
                      rebuild)


def check_npy(path: str, shape: Optional[Sequence[int]] = None, dtype=None, rebuild: str = "") -> None:
    """A ``.npy`` file that is complete (its size is what its own header implies) and holds
    the ``shape`` and ``dtype`` expected."""
    import numpy as np

    if not os.path.isfile(path):
        raise ArtifactError(f"{path} is missing{_rebuild(rebuild)}")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f".npy format version {version}, lskd writes 1.0")
            have_shape, _, have_dtype = read(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise damaged(path, f"not a readable .npy file ({e})", rebuild) from None
    want = offset + int(np.prod(have_shape, dtype=np.int64)) * have_dtype.itemsize
    size = os.path.getsize(path)
    if size != want:
        raise damaged(path, f"{size} bytes, its .npy header implies {want}"
                      + (" (truncated?)" if size < want else ""), rebuild)
    if shape is not None and tuple(have_shape) != tuple(int(s) for s in shape):
        raise damaged(path, f"shape {tuple(have_shape)}, expected {tuple(int(s) for s in shape)}", rebuild)
    if dtype is not None and have_dtype != np.dtype(dtype):
        raise damaged(path, f"dtype {have_dtype}, expected {np.dtype(dtype)}", rebuild)


def check_raw(path: str, n_bytes: int, rebuild: str = "") -> None:
    """A raw binary file (a memory map without header) of exactly ``n_bytes``."""
    check_file_record(path, {"bytes": int(n_bytes)}, rebuild)


def load_json(path: str, what: str, rebuild: str = "", keys: Iterable[str] = (), required: bool = True):
    """The JSON object in ``path``; a missing (when ``required``), unreadable or incomplete file
    is refused in one line. Returns None for a missing file that is not required."""
    if not os.path.isfile(path):
        if not required:
            return None
        raise ArtifactError(f"{what} {path} is missing{_rebuild(rebuild)}")
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except UnicodeDecodeError as e:
        raise damaged(path, f"not UTF-8 text ({e.reason} at byte {e.start})", rebuild) from None
    except ValueError as e:
        raise damaged(path, f"not valid JSON ({e}; truncated?)", rebuild) from None
    if not isinstance(obj, dict):
        raise damaged(path, f"holds a JSON {type(obj).__name__}, not the object a {what} is", rebuild)
    missing = [k for k in keys if k not in obj]
    if missing:
        raise damaged(path, f"lacks {', '.join(missing)} (a {what} has them)", rebuild)
    return obj


def check_output_dir(path: str, flag: str) -> None:
    """Refuse, before any work, an output folder that cannot be one: an existing non-folder,
    or a place this user cannot write (the folder itself, or its nearest existing parent)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"{flag} {path} exists and is not a folder; give a folder (new or existing)")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise OutputError(f"{flag} {path}: {probe} is a file, so the folder cannot be made; give another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: {probe} is not writable by this user; "
                          f"give a folder you can write, or change its permissions")


def is_out_of_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def out_of_space(path: str, e: OSError) -> OutputError:
    return OutputError(f"no space left while writing {path} ({os.strerror(e.errno)}); nothing was left under "
                       f"that name: free space there, or choose another output folder, and run the command again")


def preallocate(path: str, n_bytes: int) -> None:
    """Reserve ``n_bytes`` for ``path`` (a memory map about to be filled), so that a full disk
    fails here with ENOSPC instead of as a SIGBUS when a page of the map is first written."""
    if n_bytes <= 0 or not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, n_bytes)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            return  # a filesystem without fallocate: write as before
        raise
    finally:
        os.close(fd)
