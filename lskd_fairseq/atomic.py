"""One atomic write for every file a rerun will trust.

Checkpoints, caches, manifests, results JSON, reports, figures and sentencepiece
models are written to a temporary file in the same folder, flushed and fsync'd,
then renamed over the target; on any failure the temporary file is removed, so a
half-written file never sits under the final name. A full disk becomes one line
(``lskd_fairseq.integrity.OutputError``) instead of an ``OSError``. Files get the mode the user's
umask gives (``tempfile.mkstemp`` would leave them 0600).

Pure Python (plus torch only inside ``atomic_save``): the vision and study layers
use it too, and importing it imports neither fairseq nor torch.
"""

import contextlib
import json
import os
import tempfile
from typing import Callable, Iterable, Iterator, Union

__all__ = ["atomic_path", "atomic_write", "atomic_write_text", "atomic_write_lines",
           "atomic_write_json", "atomic_save"]


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name
    (``np.save``, ``savefig``, sentencepiece); on success it is fsync'd and renamed
    over ``path``, on failure removed. ``suffix`` keeps an extension a writer
    insists on (``.png``, ``.npy``)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp" + suffix, dir=d)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        from lskd_fairseq import integrity

        if integrity.is_out_of_space(e):
            raise integrity.out_of_space(path, e) from None
        raise


def atomic_write(path: str, data: Union[bytes, str, Callable]) -> None:
    """Write ``data`` (bytes, str as UTF-8, or a callable given the open binary file)
    to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, text)


def atomic_write_lines(path: str, lines: Iterable[str]) -> None:
    atomic_write(path, "".join(line + "\n" for line in lines))


def atomic_write_json(path: str, obj, indent: int = 2, default=None) -> None:
    atomic_write(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, default=default) + "\n")


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))
