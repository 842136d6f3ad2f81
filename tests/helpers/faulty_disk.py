"""`train.py` on a faulty disk, for the tests of checkpoint files:

    python -m tests.helpers.faulty_disk MODE N <train.py overrides>

- `die`: the N-th checkpoint write (counted from 1) stops halfway and the process dies on the spot
  (`os._exit`, as after SIGKILL: nothing is cleaned up);
- `enospc`: the N-th checkpoint write and the later ones stop halfway with a full disk (ENOSPC);
- `tmpfull`: the temporary directory is full (every `tempfile` file or folder fails with ENOSPC); N unused.
"""

import errno
import io
import os
import runpy
import sys
import tempfile

import torch

real_save = torch.save
writes = 0
TEMPFILE = ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile")


def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def faulty(mode: str, n: int):
    def save(obj, f, *args, **kwargs):
        global writes
        if ".ckpt" not in str(getattr(f, "name", "")):  # the tokenisation cache and others: untouched
            return real_save(obj, f, *args, **kwargs)
        writes += 1
        if writes < n:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        f.flush()
        if mode == "die":
            os._exit(137)
        full()

    return save


if __name__ == "__main__":
    mode, n = sys.argv[1], int(sys.argv[2])
    if mode == "tmpfull":
        for name in TEMPFILE:
            setattr(tempfile, name, full)
    else:
        torch.save = faulty(mode, n)
    sys.argv = ["train.py", *sys.argv[3:]]
    runpy.run_path("train.py", run_name="__main__")
