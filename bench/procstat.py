"""CPU and memory of processes from /proc (Linux), shared by the load generator and the runner.

CPU is counted in seconds of user + system time; a group's CPU% over a window is
(delta seconds / window seconds) x 100, so 100% is one full core and 200% is both cores
of a 2-core machine. Groups: explicit pids (servers, load-generator workers) or every
process with a given command name (`postgres`: the postmaster and all its backends;
`redis-server`).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `want` (up to the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            # Raising the hard limit needs privileges; keep what we have.
            return soft
        return target
    return soft


def pid_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (its own threads), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


def pids_named(name: str) -> list[int]:
    """Every process whose /proc/<pid>/comm is `name` (e.g. `postgres`, `redis-server`)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as f:
                comm = f.read().strip().decode("latin-1")
        except OSError:
            continue
        if comm == name:
            out.append(int(entry))
    return out


def postgres_pids(databases: Iterable[str] | None = None) -> list[int]:
    """The PostgreSQL server's processes: the postmaster, its auxiliary processes
    (checkpointer, WAL writer, autovacuum, ...) and the backends of `databases` only
    (from the backend's process title `postgres: [cluster:] <user> <database> <client> <state>`),
    so backends of other databases on a shared server are left out. None: all of them."""
    wanted = set(databases) if databases is not None else None
    out = []
    for pid in pids_named("postgres"):
        if wanted is None:
            out.append(pid)
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode("latin-1").split()
        except OSError:
            continue
        # The title may carry a cluster name first ("postgres: 15/main: <user> <db> ...");
        # a backend's client is "host(port)" or "[local]", and the database precedes it.
        client = next((i for i, w in enumerate(title) if w == "[local]" or w.endswith(")")), None)
        if client is None or client < 2 or title[client - 1] in wanted:
            out.append(pid)
    return out


def rss_kib(pid: int) -> int | None:
    """Resident set size (VmRSS) of one process in KiB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, summed over all cores (/proc/stat)."""
    with open("/proc/stat", "rb") as f:
        first = f.readline().split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    # guest time is already included in user/nice
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


class CpuSampler:
    """Samples CPU seconds of named groups of processes; `delta()` gives CPU% per group.

    `groups` maps a label to an iterable of pids, a string command name, or a callable
    returning pids (names and callables are resolved at every sample, so backends that
    come and go are counted while they live).
    """

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = {
            k: (v if isinstance(v, str) or callable(v) else list(v)) for k, v in groups.items()
        }

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for label, spec in self.groups.items():
            if isinstance(spec, str):
                pids = pids_named(spec)
            elif callable(spec):
                pids = spec()
            else:
                pids = spec
            per_pid = {pid: pid_cpu_seconds(pid) for pid in pids}
            out[label] = sum(v for v in per_pid.values() if v is not None)
            # per-pid detail for processes that may vanish between samples
            for pid, value in per_pid.items():
                if value is not None:
                    out[f"{label}#{pid}"] = value
        busy, total = machine_cpu_seconds()
        out["@machine_busy"] = busy
        out["@machine_total"] = total
        return out

    @staticmethod
    def delta(
        before: dict[str, float], after: dict[str, float], seconds: float
    ) -> dict[str, float]:
        """CPU% per group over `seconds` (100 = one core). A process counted in only one of
        the two samples contributes only the time it used while both saw it."""
        out: dict[str, float] = {}
        labels = {k for k in after if "#" not in k and not k.startswith("@")}
        for label in sorted(labels):
            used = 0.0
            prefix = f"{label}#"
            for key, value in after.items():
                if key.startswith(prefix):
                    used += value - before.get(key, value)  # new process: counted from now
            out[label] = round(100.0 * used / seconds, 1) if seconds > 0 else 0.0
        busy = after["@machine_busy"] - before["@machine_busy"]
        total = after["@machine_total"] - before["@machine_total"]
        ncpu = os.cpu_count() or 1
        out["machine"] = round(100.0 * ncpu * busy / total, 1) if total > 0 else 0.0
        return out


def all_cpu_seconds() -> dict[int, tuple[str, float]]:
    """{pid: (command name, user + system CPU seconds)} of every process on the machine;
    kernel threads (children of kthreadd) are named `[kernel]`: their work (writeback,
    reclaim) is often done for the benchmark's own processes."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        lpar, rpar = raw.find(b"("), raw.rfind(b")")
        fields = raw[rpar + 2 :].split()
        try:
            cpu = (int(fields[11]) + int(fields[12])) / _TICK
        except (IndexError, ValueError):
            continue
        kernel = entry == "2" or fields[1] == b"2"
        out[int(entry)] = ("[kernel]" if kernel else raw[lpar + 1 : rpar].decode("latin-1"), cpu)
    return out


class OtherCpu:
    """CPU of every process on the machine that is not ours (the systems under test, the
    load generator, the runner, PostgreSQL's benchmark backends and auxiliaries, Redis),
    from each process's own counters in /proc/<pid>/stat: `start()` then `stop()`.

    A process that starts during the window counts all of its CPU (it began at 0); one
    that exits during it counts nothing (its time went to its parent only when reaped).
    The result names the busiest of them, so a disturbed step says who disturbed it."""

    def __init__(self, exclude: Any) -> None:
        # exclude: a callable returning the set of pids that are ours (resolved at each
        # sample: PostgreSQL backends of the benchmark's databases come and go)
        self.exclude = exclude
        self.before: dict[int, tuple[str, float]] = {}
        self.t0 = 0.0

    def start(self) -> None:
        import time

        self.before = all_cpu_seconds()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        import time

        after = all_cpu_seconds()
        seconds = max(time.monotonic() - self.t0, 1e-6)
        ours = set(self.exclude()) | {os.getpid(), os.getppid()}
        per_name: dict[str, float] = {}
        total = kernel = 0.0
        for pid, (name, cpu) in after.items():
            if pid in ours:
                continue
            prev = self.before.get(pid)
            used = cpu - prev[1] if prev is not None and prev[0] == name else cpu
            if used <= 0:
                continue
            if name == "[kernel]":
                kernel += used
                continue
            total += used
            per_name[name] = per_name.get(name, 0.0) + used
        top = sorted(per_name.items(), key=lambda kv: -kv[1])[:5]
        return {
            "pct": round(100.0 * total / seconds, 1),
            "kernel_pct": round(100.0 * kernel / seconds, 1),
            "seconds": round(seconds, 2),
            "top": [[n, round(100.0 * s / seconds, 1)] for n, s in top],
        }
