"""keep_freed_memory: with it, a forward reuses the pages the one before freed
instead of faulting fresh ones in. Run in a child process: the setting is
process-wide and permanent."""
import platform
import subprocess
import sys

import pytest

import sparsekernels as sk

# Minor page faults of four forwards, after two, of a small network whose
# activation (48 MiB) is over glibc's largest dynamic mmap threshold (32 MiB).
_CHILD = """
import resource, sys, torch
import sparsekernels as sk
if sys.argv[1] == "keep":
    assert sk.keep_freed_memory()
net = torch.nn.Sequential(torch.nn.Conv2d(4, 48, 1), torch.nn.ReLU(), torch.nn.Conv2d(48, 4, 1))
x = torch.randn(1, 4, 512, 512)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():
        net(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(), faults()
print(sum(faults() for _ in range(4)))
"""

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 4 * (48 << 20) // 4096  # the activation's pages, over four forwards
    assert _faults("default") >= pages  # unmapped on free, faulted in on the next write
    assert _faults("keep") < pages // 2  # reused: at most a stray round faults


@pytest.mark.skipif(GLIBC, reason="other C libraries")
def test_other_c_libraries_are_left_alone():
    assert sk.keep_freed_memory() is False
