"""`kdbench` CLI in a subprocess that SIGKILLs itself at a chosen write, for the crash-safety tests.

KDBENCH_TEST_KILL="<pattern>:<n>" kills the process at the n-th atomic rename onto a path whose end matches the glob
<pattern> ("records/*.json", ".ckpt"), after cutting the temporary file to half its length: the state a power cut
or SIGKILL mid-write leaves behind.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys

from kdbench.cli import main

_real_replace = os.replace


def _install(spec: str) -> None:
    suffix, _, n = spec.rpartition(":")
    seen = [0]

    def replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(str(dst), f"*{suffix}"):
            seen[0] += 1
            if seen[0] == int(n):
                size = os.path.getsize(src)
                os.truncate(src, size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        return _real_replace(src, dst, *args, **kwargs)

    os.replace = replace


if __name__ == "__main__":
    if os.environ.get("KDBENCH_TEST_KILL"):
        _install(os.environ["KDBENCH_TEST_KILL"])
    sys.exit(main(sys.argv[1:]))
