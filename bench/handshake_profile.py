"""Where the time of a WebSocket handshake goes (issue 18, item 4): a profile, not a goal.

    DATABASE_URL=postgresql://... .venv/bin/python bench/handshake_profile.py [--sockets 2000]

Provisions the `bench` tenant as `bench/run.py` does, starts a redis-server of its own (so that
`INFO commandstats` counts this server's commands only) and one uvicorn process of the project
(`DEBUG=0`, as in `run.py`), then opens --sockets authenticated sockets over 20 rooms with
--concurrency handshakes in flight, through `loadgen.py`'s connect-only worker (after its 40
warm-up sockets), while `py-spy record --format raw --function` samples the server. Then it
closes them. It reports handshakes/s, handshake p50/p99, the top frames by self and by
inclusive share of the samples, and per handshake (and per close): Redis commands (the delta of
`INFO commandstats`), PostgreSQL transactions and table scans (`pg_stat_database` and
`pg_stat_user_tables` of the project's database, which should be the bench's own:
pg_stat_statements is not loaded on this server), and the app's own counters from `/metrics`
(`chat_db_seconds_count` by op: tenant-scoped database calls, each one hop to a DB thread;
`chat_channel_layer_seconds_count` by op).

Writes bench/results/handshake-<date>-<time>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import loadgen  # noqa: E402
from procstat import OtherCpu, pid_cpu_seconds, postgres_pids, raise_nofile  # noqa: E402
from report import summarize_profile  # noqa: E402
from run import (  # noqa: E402
    PY,
    Servers,
    free_port,
    log,
    machine_info,
    package_versions,
    provision_bench_tenant,
    redis_server_command,
    wait_redis,
)

DOMAIN = "bench.localhost"
# The app's own call counters worth a per-handshake figure (label `op`).
METRIC_COUNTS = ("chat_db_seconds", "chat_channel_layer_seconds")
PG_DATABASE_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
)


# ---------------------------------------------------------------------------------------
# counters


def redis_commands(port: int) -> Counter[str]:
    import redis

    stats = redis.Redis(host="127.0.0.1", port=port).info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


def pg_counters(database_url: str) -> Counter[str]:
    """The database's transactions and rows, and scans per table (every schema)."""
    import psycopg

    out: Counter[str] = Counter()
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT {', '.join(PG_DATABASE_COUNTERS)} FROM pg_stat_database "  # type: ignore[arg-type]
            "WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        for name, value in zip(PG_DATABASE_COUNTERS, row, strict=True):
            out[name] = int(value or 0)
        for schema, table, scans, ins, upd, dele in conn.execute(
            "SELECT schemaname, relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0), "
            "n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
        ):
            # The tenant's schema is `bench`; shared tables live in `public`.
            out[f"scans {schema}.{table}"] = int(scans)
            out[f"writes {schema}.{table}"] = int(ins + upd + dele)
    return out


def app_counters(port: int) -> Counter[str]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name not in METRIC_COUNTS:
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                out[f"{family.name} {sample.labels.get('op', '')}"] += int(sample.value)
    return out


def snapshot(database_url: str, redis_port: int, http_port: int) -> dict[str, Counter[str]]:
    return {
        "redis": redis_commands(redis_port),
        "postgres": pg_counters(database_url),
        "app": app_counters(http_port),
    }


def per_socket(
    before: dict[str, Counter[str]], after: dict[str, Counter[str]], sockets: int
) -> dict[str, dict[str, float]]:
    """What one handshake (or close) cost, on average: the counters' growth / sockets."""
    out: dict[str, dict[str, float]] = {}
    for kind in before:
        grown = after[kind] - before[kind]  # Counter subtraction keeps what grew only
        out[kind] = {
            k: round(v / sockets, 3) for k, v in sorted(grown.items(), key=lambda kv: -kv[1])
        }
    return out


# ---------------------------------------------------------------------------------------
# the profile


# The checkout's own packages: a frame in one of them is the project's code.
PROJECT_PACKAGES = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if stack and count_s.isdigit():
            out.append((stack.split(";"), int(count_s)))
    return out


def _package(frame: str) -> str:
    """`Name.method (django/db/models/query.py:123)` -> `django`."""
    where = frame.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    where = where.split("site-packages/")[-1].removeprefix(str(ROOT) + "/")
    return where.split("/")[0].removesuffix(".py")


def _shares(counts: Counter[str], top: int) -> list[list[Any]]:
    total = sum(counts.values()) or 1
    return [[k, n, round(100 * n / total, 1)] for k, n in counts.most_common(top)]


def by_package(path: Path, top: int = 15) -> dict[str, list[list[Any]]]:
    """Samples by top-level package of the file (django, channels, chat, asyncio, ...): `self`
    (the flame graph's leaves summed: whose code the CPU is spent in) and `inclusive` (the
    package anywhere on the stack: e.g. everything the Redis client costs, its waits on
    asyncio included)."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for frames, count in _stacks(path):
        total += count
        own[_package(frames[-1])] += count
        for package in {_package(f) for f in frames}:
            anywhere[package] += count
    inclusive = [[k, n, round(100 * n / (total or 1), 1)] for k, n in anywhere.most_common(top)]
    return {"self": _shares(own, top), "inclusive": inclusive}


def by_project_frame(path: Path, top: int = 30) -> list[list[Any]]:
    """Each sample charged to the innermost frame of the project's own code on its stack (the
    library work it called included), or to the leaf's package when no project frame is on
    it (uvicorn's HTTP parsing and WebSocket upgrade, the event loop): what each of our
    functions costs with what it asks of Django, Redis clients and psycopg, without the inner
    ASGI apps that the middleware's inclusive figures contain."""
    charged: Counter[str] = Counter()
    for frames, count in _stacks(path):
        ours = [f for f in frames if _package(f) in PROJECT_PACKAGES]
        charged[ours[-1] if ours else f"(no project frame) {_package(frames[-1])}"] += count
    return _shares(charged, top)


class PySpy:
    """`py-spy record` on one process until `stop()` (SIGINT makes it write its file)."""

    def __init__(self, pid: int, rate: int, out: Path, gil: bool, nonblocking: bool) -> None:
        pyspy = Path(PY).parent / "py-spy"
        if not pyspy.exists():
            raise SystemExit("py-spy is not in .venv/bin (a dev dependency: uv sync)")
        self.out = out
        self.cmd = [str(pyspy), "record", "--pid", str(pid), "--rate", str(rate)]
        # --function: one frame per function (its first line), not one per line it was on.
        self.cmd += ["--format", "raw", "--function", "--output", str(out)]
        if nonblocking:
            # Not pausing the server keeps its timing, at the price of some torn stacks (a
            # coroutine read while it ran, without its callers). Pausing it (--blocking)
            # showed five times the samples in socket writes to Redis (ptrace stops the
            # thread in its syscalls), so the torn stacks are the lesser distortion.
            self.cmd.append("--nonblocking")
        if gil:
            # Only samples of the thread holding the GIL: what spends the process's one core
            # of Python, not threads parked on a condition or in select() (py-spy counts
            # some of those as active).
            self.cmd.append("--gil")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(1.0)  # attached and sampling (its first samples of an idle server are dropped)
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy exited: {self.proc.communicate()[0].decode()[-500:]}")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists() or not self.out.stat().st_size:
            raise RuntimeError("py-spy wrote no samples")


def measure(
    args: argparse.Namespace,
    cfg: dict[str, Any],
    servers: Servers,
    redis: tuple[int, int],
    tmp: Path,
) -> dict[str, Any]:
    """`redis`: (pid, port) of the bench's own redis-server."""
    pid, http_port = servers.pids[0], servers.ports[0]
    redis_pid, redis_port = redis
    lg_args = loadgen.parser().parse_args(
        ["--url", servers.urls, "--host", DOMAIN, "--tokens", str(cfg["tokens"]),
         "--connect-only", str(args.sockets), "--rooms", str(args.rooms),
         "--concurrency", str(args.concurrency), "--procs", "1", "--server-pids", str(pid)]
    )  # fmt: skip
    users = json.loads(Path(cfg["tokens"]).read_text())["users"]
    plan = loadgen.plan_connect(lg_args, len(users))[0]
    ctx = mp.get_context("fork")
    pipe, child_end = ctx.Pipe()
    worker = ctx.Process(target=loadgen._worker_main, args=(lg_args, users, plan, child_end))
    worker.start()
    raw = tmp / "handshake.pyspy.txt"
    spy = PySpy(pid, args.pyspy_rate, raw, gil=args.gil, nonblocking=args.nonblocking)
    dbs = [cfg["database"]]
    other = OtherCpu(
        lambda: (
            {pid, redis_pid, worker.pid or 0, spy.proc.pid if spy.proc else 0}
            | set(postgres_pids(dbs))
        )
    )
    try:
        loadgen._expect(pipe, "ready")  # the worker's warm-up sockets opened and closed
        time.sleep(args.settle)  # their teardown done, the backends' statistics flushed
        base = snapshot(cfg["database_url"], redis_port, http_port)
        spy.start()
        t0 = loadgen._now() + 100_000_000
        pipe.send(t0)
        time.sleep(max(0.0, (t0 - loadgen._now()) / 1e9))
        other.start()
        cpu0, redis0 = pid_cpu_seconds(pid) or 0.0, pid_cpu_seconds(redis_pid) or 0.0
        started = time.monotonic()
        opened = loadgen._expect(pipe, "opened")
        open_s = time.monotonic() - started
        cpu1, redis1 = pid_cpu_seconds(pid) or 0.0, pid_cpu_seconds(redis_pid) or 0.0
        other_cpu = other.stop()
        spy.stop()
        time.sleep(args.settle)
        after_open = snapshot(cfg["database_url"], redis_port, http_port)
        pipe.send("close")
        result = loadgen._expect(pipe, "result")
        time.sleep(args.settle)
        after_close = snapshot(cfg["database_url"], redis_port, http_port)
    finally:
        worker.join(timeout=15)
        if worker.is_alive():
            worker.kill()
        if spy.proc is not None and spy.proc.poll() is None:
            spy.proc.kill()
    n = max(opened["opened"], 1)
    profile = summarize_profile(raw, top=args.top)
    profile["by_package"] = by_package(raw)
    profile["by_project_frame"] = by_project_frame(raw, top=args.top)
    if args.keep_stacks:
        profile["stacks_file"] = Path(args.keep_stacks).name  # next to the JSON
        Path(args.keep_stacks).write_text(raw.read_text())
    return {
        "sockets": args.sockets,
        "opened": opened["opened"],
        "still_open_before_close": result["still_open"],
        "connect_errors": result["connect_errors"],
        "closed_by_server": result["closed"],
        "open_s": round(open_s, 3),
        "handshakes_per_s": round(opened["opened"] / open_s, 1) if open_s else 0.0,
        "handshake_ms_p50": result["connect_ms_p50"],
        "handshake_ms_p99": result["connect_ms_p99"],
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_ms_per_handshake": round(1000 * (cpu1 - cpu0) / n, 3),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / open_s, 1) if open_s else None,
        "redis_cpu_ms_per_handshake": round(1000 * (redis1 - redis0) / n, 3),
        "other_cpu": other_cpu,
        "per_handshake": per_socket(base, after_open, n),
        "per_close": per_socket(after_open, after_close, n),
        "profile": profile,
    }


# ---------------------------------------------------------------------------------------


def print_report(r: dict[str, Any]) -> None:
    p = r["profile"]
    print(
        f"\n{r['opened']}/{r['sockets']} sockets in {r['open_s']} s: {r['handshakes_per_s']} "
        f"handshakes/s, p50 {r['handshake_ms_p50']} ms, p99 {r['handshake_ms_p99']} ms; server "
        f"CPU {r['server_cpu_ms_per_handshake']} ms a handshake ({r['server_cpu_pct']} % of a "
        f"core), Redis {r['redis_cpu_ms_per_handshake']} ms; other processes "
        f"{r['other_cpu']['pct']} % {r['other_cpu']['top']}"
    )
    print(f"profile: {p['samples']} samples, threads {p['threads']}")
    for title, key in (("inclusive (on the stack)", "top_total"), ("self (running)", "top_own")):
        print(f"\ntop frames, {title}:")
        for frame, count, pct in p[key]:
            print(f"  {pct:5.1f} %  {count:6d}  {frame}")
    print("\ncharged to the innermost frame of the project's code (library work included):")
    for frame, count, pct in p["by_project_frame"]:
        print(f"  {pct:5.1f} %  {count:6d}  {frame}")
    for kind in ("self", "inclusive"):
        print(f"\n{kind} by package:")
        for name, count, pct in p["by_package"][kind]:
            print(f"  {pct:5.1f} %  {count:6d}  {name}")
    for phase in ("per_handshake", "per_close"):
        print(f"\n{phase.replace('_', ' ')}:")
        for kind, values in r[phase].items():
            shown = ", ".join(f"{k} {v:g}" for k, v in values.items() if v >= 0.01)
            print(f"  {kind}: {shown or '-'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sockets", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--pyspy-rate", type=int, default=200, help="samples a second")
    ap.add_argument(
        "--all-threads",
        dest="gil",
        action="store_false",
        help="sample every active thread, not only the one holding the GIL",
    )
    ap.add_argument(
        "--blocking",
        dest="nonblocking",
        action="store_false",
        help="py-spy pauses the server for each sample (whole stacks, distorted timing)",
    )
    ap.add_argument("--top", type=int, default=30, help="rows of each profile table")
    # An idle PostgreSQL 15 backend reports its counts up to 10 s late (PGSTAT_IDLE_INTERVAL);
    # with 2 s, a tenth of the handshakes' table scans were still missing.
    ap.add_argument(
        "--settle", type=float, default=11.0, help="s for PostgreSQL's statistics to be flushed"
    )
    ap.add_argument("--results-dir", default=str(BENCH / "results"))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    results = Path(args.results_dir)
    # py-spy's collapsed stacks, next to the JSON (flamegraph.pl or speedscope read them).
    args.keep_stacks = None if args.no_write else results / f"handshake-{stamp}.stacks.txt"
    if args.keep_stacks:
        results.mkdir(parents=True, exist_ok=True)

    raise_nofile()
    database_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tenantchat")
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="tenantchat-handshake-"))
    redis_port = free_port()
    cfg: dict[str, Any] = {
        "secret": "bench-" + secrets.token_hex(24),
        "database_url": database_url,
        "database": database_url.rsplit("/", 1)[-1].split("?")[0],
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "tokens": tmp / "tokens.json",
    }
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": cfg["secret"]}
    env.update(DATABASE_URL=database_url, REDIS_URL=cfg["redis_url"])
    logf = open(tmp / "redis.log", "ab")  # noqa: SIM115
    redis_proc = subprocess.Popen(
        redis_server_command(redis_port), stdout=logf, stderr=subprocess.STDOUT
    )
    servers = Servers("project-1", cfg, tmp)
    try:
        wait_redis(redis_port)
        log(f"work dir {tmp}; provisioning")
        provision_bench_tenant(env, DOMAIN, cfg["tokens"])
        servers.start()
        log(f"server pid {servers.pids[0]} on {servers.urls}; opening {args.sockets} sockets")
        report = measure(args, cfg, servers, (redis_proc.pid, redis_port), tmp)
        if not servers.alive():
            raise RuntimeError(f"the server died:\n{servers.log_tail()}")
        machine = machine_info(database_url, cfg["redis_url"])
    finally:
        servers.stop()
        redis_proc.kill()
        redis_proc.wait()
        logf.close()
    print_report(report)
    now = dt.datetime.now(dt.UTC)
    result = {
        "date": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "elapsed_s": round(time.time() - started, 1),
        "command": "DATABASE_URL=... "
        + shlex.join(["python", "bench/handshake_profile.py", *sys.argv[1:]]),
        "server_command": servers.commands[0],
        "machine": machine,
        "packages": package_versions(),
        "params": {
            k: v
            for k, v in vars(args).items()
            if k not in ("results_dir", "no_write", "keep_stacks")
        },
        **report,
    }
    if not args.no_write:
        out = results / f"handshake-{stamp}.json"
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        log(f"wrote {out}")
    with contextlib.suppress(OSError):
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
