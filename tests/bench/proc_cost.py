"""What a request costs a proxy process, measured from outside it: CPU time and instruction counts.

Latency on this shared 2-core machine moves by more than a small addon costs (a few hundred
microseconds between identical runs), so the small per-request costs are measured two more ways:
- CPU time the process spent, in nanoseconds from /proc/<pid>/task/*/schedstat (the 10 ms ticks of
  /proc/<pid>/stat are too coarse for blocks of a few hundred requests);
- instructions executed, counted by valgrind's callgrind with instrumentation switched on only
  around the measured requests: the same process, inputs and requests give the same count whatever
  else the machine is doing (cache misses are not in it, CPU time has them).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a process and its reaped children so far (10 ms ticks: for runs of
    seconds; `cpu_ns` for short blocks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int) -> int:
    """Nanoseconds the process's threads have run on a CPU so far."""
    total = 0
    for name in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            total += int(Path(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between the listing and the read
    return total


def have_callgrind() -> bool:
    return all(shutil.which(t) for t in ("valgrind", "callgrind_control"))


def callgrind_argv(out_file: Path) -> list[str]:
    """The prefix that starts a program under callgrind with instrumentation off (start-up is not
    counted, and runs at near native speed until `counted` switches it on)."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}"]


def counted(pid: int, out_file: Path, work: Callable[[], None]) -> int:
    """Instructions the callgrind-run process `pid` executes while `work()` runs."""
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
    try:
        work()
    finally:
        subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    totals = [
        int(m.group(1))
        for name in glob.glob(f"{out_file}*")
        for m in re.finditer(r"^(?:summary|totals): (\d+)", Path(name).read_text(errors="replace"), re.M)
    ]
    for name in glob.glob(f"{out_file}*"):
        Path(name).unlink()  # the next measurement starts from an empty set of dumps
    return max(totals, default=0)
