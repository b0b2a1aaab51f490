"""`make bench`: the project against two baselines, in one run, on this machine.

    DATABASE_URL=postgresql://... REDIS_URL=redis://... .venv/bin/python bench/run.py [--quick]

Starts every system (raw baseline, the project on one uvicorn process, the seed-style
baseline) and keeps them running, then: (1) opens 2000 authenticated sockets on each (time
to open all, RSS per idle socket); (2) searches each system's knee at 20 rooms x 20 members,
10 senders a room, the systems taking turns at every step (raw, project, seed, raw, ...),
repeated (--repeats) so the goal uses the median ratio; (3) profiles the project; (4) a
slow-client run (one socket in ten stops reading); (5) a recovery run (the project on a Redis
of its own that is SIGKILLed and started again). Every step records the CPU of every other
process on the machine and is marked disturbed past --disturbed-pct; a goal judged only on
disturbed steps gets no verdict. A step passes when every message reached every member
(ratio 1.0, no error frame, no failed handshake), the load generator sent at >= 90 % of the
asked rate, and p99 send-to-receive latency <= 100 ms.

Writes bench/results/<date>.json and regenerates bench/RESULTS.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from procstat import machine_cpu_seconds, raise_nofile  # noqa: E402
from report import SLO_P99_MS, headline, judge, summarize_profile, write_markdown  # noqa: E402

PY = sys.executable
DEFAULT_RATES = [0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 9]
SYSTEM_ORDER = ["raw", "project-1", "project-2", "seed"]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# environment


def db_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


def execute(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def ensure_database(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(db_url(base, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine_info(database_url: str, redis_url: str) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    pg_version = redis_version = ""
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            pg_version = row[0] if row else ""
    with contextlib.suppress(Exception):
        import redis

        redis_version = str(redis.Redis.from_url(redis_url).info("server")["redis_version"])
    return {
        "nproc": os.cpu_count(),
        "model_name": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": redis_version,
    }


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "django",
        "channels",
        "channels-redis",
        "uvicorn",
        "websockets",
        "uvloop",
        "psycopg",
        "redis",
        "pyjwt",
        "django-tenants",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def provision_bench_tenant(env: dict[str, str], domain: str, tokens: Path) -> None:
    """The `bench` tenant with 400 users, its chat tables emptied, and their access tokens
    in `tokens` (`env` carries the server's DATABASE_URL and SECRET_KEY)."""
    subprocess.run(
        [PY, "manage.py", "migrate_schemas", "--shared", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [
            PY,
            "manage.py",
            "bench_provision",
            "--tenant",
            "bench",
            "--domain",
            domain,
            "--users",
            "400",
            "--tokens-out",
            str(tokens),
            "--reset-chat",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def redis_server_command(port: int) -> list[str]:
    """A redis-server of the bench's own on `port` (never the shared one), no persistence."""
    redis_bin = shutil.which("redis-server")
    if not redis_bin:
        raise RuntimeError("redis-server not on PATH")
    cmd = [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    return [*cmd, "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]


def wait_redis(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not _redis_ping(port):
        if time.monotonic() > deadline:
            raise RuntimeError("the bench's redis-server did not start")
        time.sleep(0.05)


class Quiet:
    """Waits, within a budget, until other work on the machine (tests, builds) stops,
    so that a step does not measure someone else's load. What could not be avoided is
    reported per step as `other` CPU."""

    def __init__(self, budget_s: float, threshold_pct: float, per_wait_s: float = 15.0) -> None:
        self.budget = budget_s
        self.threshold = threshold_pct
        self.per_wait = per_wait_s
        self.waited = 0.0

    def wait(self) -> float:
        """Busy% of the whole machine (100 = one core) over the last second before going."""
        busy_pct = 0.0
        start = time.monotonic()
        while True:
            b0, t0 = machine_cpu_seconds()
            time.sleep(1.0)
            b1, t1 = machine_cpu_seconds()
            busy_pct = 100.0 * (os.cpu_count() or 1) * (b1 - b0) / max(t1 - t0, 1e-9)
            if (
                busy_pct <= self.threshold
                or self.waited >= self.budget
                or time.monotonic() - start >= self.per_wait
            ):
                return round(busy_pct, 1)
            self.waited += 1.0


# ---------------------------------------------------------------------------------------
# servers


class Servers:
    """One system's uvicorn process(es)."""

    def __init__(
        self, name: str, cfg: dict[str, Any], logdir: Path, label: str | None = None
    ) -> None:
        self.name = name
        self.label = label or name
        self.cfg = cfg
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.commands: list[str] = []

    def start(self) -> None:
        count = 2 if self.name == "project-2" else 1
        base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for i in range(count):
            port = free_port()
            args = [
                PY,
                "-m",
                "uvicorn",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
            env = dict(base_env)
            if self.name.startswith("project"):
                args += ["config.asgi:application"]
                cwd = ROOT
                env.update(
                    DEBUG="0",
                    SECRET_KEY=self.cfg["secret"],
                    DATABASE_URL=self.cfg["database_url"],
                    REDIS_URL=self.cfg["redis_url"],
                    CHANNEL_PREFIX="tcbench",
                )
                shown_env = (
                    "DEBUG=0 SECRET_KEY=<bench> DATABASE_URL REDIS_URL CHANNEL_PREFIX=tcbench"
                )
            elif self.name == "raw":
                args += ["--app-dir", "bench", "raw_app:app"]
                cwd = ROOT
                env.update(
                    SECRET_KEY=self.cfg["secret"],
                    RAW_DATABASE_URL=self.cfg["raw_url"],
                    REDIS_URL=self.cfg["redis_url"],
                )
                shown_env = "SECRET_KEY=<bench> RAW_DATABASE_URL=<.../bench_raw> REDIS_URL"
            else:
                args += ["--app-dir", "bench/seed_app", "seedchat.asgi:application"]
                cwd = ROOT
                env.update(
                    SECRET_KEY=self.cfg["secret"],
                    SEED_DATABASE_URL=self.cfg["seed_url"],
                    REDIS_URL=self.cfg["redis_url"],
                    DJANGO_SETTINGS_MODULE="seedchat.settings",
                )
                shown_env = "SECRET_KEY=<bench> SEED_DATABASE_URL=<.../bench_seed> REDIS_URL"
            logf = open(self.logdir / f"{self.label}-{i}.log", "ab")  # noqa: SIM115
            proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            self.ports.append(port)
            shown = ["python" if a == PY else a for a in args]
            self.commands.append(f"{shown_env} {shlex.join(shown)}")
        for proc, port in zip(self.procs, self.ports, strict=True):
            self._wait_ready(proc, port)

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + 60
        path = "/healthz" if self.name.startswith("project") else "/"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # the server answers (the seed has no HTTP routes: 404)
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start on port {port}:\n{self.log_tail()}")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def urls(self) -> str:
        return ",".join(f"ws://127.0.0.1:{p}" for p in self.ports)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logdir.glob(f"{self.label}-*.log")):
            text = path.read_text(errors="replace").splitlines()
            out.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def restart(self) -> None:
        self.stop()
        self.procs, self.ports, self.commands = [], [], []
        self.start()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------------------------
# one system


class KneeSearch:
    """The per-sender rate ladder until a step fails (halving below the ladder if its first
    rung fails), then `bisect` bisections between the last pass and the first failure."""

    def __init__(self, ladder: list[float], bisect: int, runner: Runner) -> None:
        self.ladder = ladder
        self.i = 0
        self.bisect_left = bisect
        self.halvings = runner.args.halvings
        self.runner = runner
        self.lo: tuple[float, dict[str, Any]] | None = None  # best pass
        self.hi: tuple[float, dict[str, Any]] | None = None  # lowest fail above it
        self.done = False

    def next_rate(self) -> float | None:
        if self.done:
            return None
        if self.hi is None:
            if self.i < len(self.ladder):
                return self.ladder[self.i]
            self.done = True
            return None
        if self.lo is None:
            if self.halvings <= 0:
                self.done = True
                return None
            return round(self.hi[0] / 2, 3)
        if self.bisect_left <= 0 or self.runner.time_left() < 0.15:
            if self.bisect_left > 0:
                self.runner.skipped.append("a bisection was cut short (time budget)")
            self.done = True
            return None
        mid = round((self.lo[0] + self.hi[0]) / 2, 3)
        if mid in (self.lo[0], self.hi[0]):
            self.done = True
            return None
        return mid

    def record(self, rate: float, report: dict[str, Any]) -> None:
        if self.hi is None:
            self.i += 1
            if report["pass"]:
                if self.lo is None or rate > self.lo[0]:
                    self.lo = (rate, report)
            else:
                self.hi = (rate, report)
                if self.lo is not None and self.lo[0] > rate:
                    self.lo = None  # a later repeat's first rung failed: look below it
            return
        if self.lo is None:
            self.halvings -= 1
            if report["pass"]:
                self.lo = (rate, report)
            else:
                self.hi = (rate, report)
            return
        self.bisect_left -= 1
        if report["pass"]:
            self.lo = (rate, report)
        else:
            self.hi = (rate, report)

    def result(self, repeat: int) -> dict[str, Any]:
        best = self.lo[1] if self.lo else None
        fail = self.hi[1] if self.hi else None
        # The knee is only as good as the two steps that place it.
        disturbed = any(s is not None and s["disturbed"] for s in (best, fail))
        return {
            "repeat": repeat,
            "knee_msgs_per_s": best["sent_per_s"] if best else 0.0,
            "pass_rate": self.lo[0] if self.lo else None,
            "fail_rate": self.hi[0] if self.hi else None,
            "p99_ms": best["p99_ms"] if best else None,
            "disturbed": disturbed,
            "other_pct": [s["cpu_pct"].get("other") for s in (best, fail) if s is not None],
        }


class Runner:
    def __init__(self, args: argparse.Namespace, cfg: dict[str, Any], tmp: Path) -> None:
        self.args = args
        self.cfg = cfg
        self.tmp = tmp
        self.quiet = Quiet(args.quiet_budget, args.quiet_threshold)
        self.started = time.monotonic()
        self.skipped: list[str] = []
        self.loadgen_procs = args.loadgen_procs
        self.pg_dbs = ",".join(cfg["pg_dbs"])
        self.steps: dict[str, list[dict[str, Any]]] = {}
        self.all_servers: list[Servers] = []

    def time_left(self) -> float:
        """Fraction of the run's time budget (--budget) still left."""
        return 1.0 - (time.monotonic() - self.started) / self.args.budget

    def wait_quiet(self) -> float | None:
        # Waiting for a quiet machine is a luxury of the first 60 % of the budget.
        if self.args.quiet_budget <= 0:
            return None
        return self.quiet.wait() if self.time_left() > 0.4 else None

    def system_args(self, name: str) -> list[str]:
        if name == "raw":
            return ["--path-template", "/ws/raw/{room}/?token={token}"]
        if name == "seed":
            return ["--path-template", "/ws/chat/{room}/?token={token}"]
        return ["--host", self.cfg["domain"], "--path-template", "/ws/chat/{room}/?token={token}"]

    def loadgen(
        self, servers: Servers, extra: list[str], timeout: float
    ) -> tuple[dict[str, Any], str]:
        out = self.tmp / "loadgen.json"
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        args = [
            PY,
            str(BENCH / "loadgen.py"),
            "--url",
            servers.urls,
            "--tokens",
            str(self.cfg["tokens"]),
            *self.system_args(servers.name),
            *extra,
            "--server-pids",
            ",".join(map(str, servers.pids)),
            "--pg-dbs",
            self.pg_dbs,
            "--exclude-pids",
            ",".join(str(p) for sv in self.all_servers for p in sv.pids) or "0",
            "--out",
            str(out),
        ]
        shown: list[str] = []
        skip = False
        for a in args:
            if skip:
                skip = False
                continue
            if a == "--out":
                skip = True
                continue
            a = "python" if a == PY else a
            a = "<tokens.json>" if a == str(self.cfg["tokens"]) else a
            shown.append(a.replace(str(BENCH) + "/", "bench/"))
        command = shlex.join(shown)
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"loadgen failed ({proc.returncode}):\n{proc.stderr[-3000:]}\n{servers.log_tail()}"
            )
        return json.loads(out.read_text()), command

    def connect_only(self, servers: Servers) -> dict[str, Any]:
        quiet = self.wait_quiet()
        report, command = self.loadgen(
            servers,
            [
                "--connect-only",
                str(self.args.connections),
                "--rooms",
                "20",
                "--concurrency",
                str(self.args.connect_concurrency),
                "--procs",
                "1",
            ],
            timeout=300,
        )
        report["command"] = command
        report["busy_before_pct"] = quiet
        report["disturbed"] = self.disturbed(report)
        log(
            f"{servers.name}: {report['opened']} sockets in {report['open_s']} s, "
            f"RSS/conn {report['rss_per_conn_kib']} KiB, "
            f"still open {report['still_open_after_hold']}, "
            f"errors {report['connect_errors']} | other {report['cpu_pct'].get('other')}% "
            f"{report['other_top']}" + (" DISTURBED" if report["disturbed"] else "")
        )
        return report

    def disturbed(self, report: dict[str, Any]) -> bool:
        return bool(report["cpu_pct"].get("other", 0.0) > self.args.disturbed_pct)

    def step(
        self, servers: Servers, rate: float, extra_args: list[str] | None = None
    ) -> dict[str, Any]:
        quiet = self.wait_quiet()
        extra = [
            "--rooms",
            "20",
            "--members",
            "20",
            "--senders",
            "10",
            "--rate",
            f"{rate:g}",
            "--duration",
            f"{self.args.duration:g}",
            "--warmup",
            f"{self.args.warmup:g}",
            "--drain",
            f"{self.args.drain:g}",
            "--concurrency",
            "20",
            "--procs",
            str(self.loadgen_procs),
            *(extra_args or []),
        ]
        report, command = self.loadgen(servers, extra, timeout=240)
        report["system"] = servers.name
        report["command"] = command
        report["busy_before_pct"] = quiet
        cpu = report["cpu_pct"]
        report["disturbed"] = self.disturbed(report)
        reasons = []
        if report["ratio"] != 1.0:
            reasons.append(f"ratio {report['ratio']}")
        if report["error_frames"]:
            reasons.append(f"errors {report['errors']}")
        want = 400 - report.get("slow", 0)
        if report["connect_errors"] or report["connected"] != want:
            reasons.append(f"connected {report['connected']}/{want} {report['connect_errors']}")
        if report["sent_per_s"] < 0.9 * report["target_msgs_per_s"]:
            # the load generator could not keep its schedule (or the server pushed back)
            reasons.append(f"sent {report['sent_per_s']}/s < 90% of {report['target_msgs_per_s']}")
        if report["p99_ms"] > SLO_P99_MS:
            reasons.append(f"p99 {report['p99_ms']} ms")
        report["pass"] = not reasons
        report["why"] = "; ".join(reasons)
        flag = " DISTURBED" if report["disturbed"] else ""
        log(
            f"{servers.name} rate {rate:g}/sender ({report['target_msgs_per_s']:g} msg/s): "
            f"{'PASS' if report['pass'] else 'FAIL ' + report['why']}{flag} | "
            f"sent {report['sent_per_s']}/s deliv {report['deliveries_per_s']}/s "
            f"p50 {report['p50_ms']} p99 {report['p99_ms']} "
            f"cpu/frame {report['cpu_us_per_frame']} us | cpu {cpu} other {report['other_top']}"
        )
        if not servers.alive():
            raise RuntimeError(f"{servers.name} died during a step:\n{servers.log_tail()}")
        return report

    def run_step(self, servers: Servers, rate: float) -> dict[str, Any]:
        report = self.step(servers, rate)
        # Somebody else's load (another test run) during a failed step: measure it again.
        if not report["pass"] and report["disturbed"] and not self.args.retries:
            pass
        elif not report["pass"] and report["disturbed"] and self.time_left() <= 0.3:
            self.skipped.append(f"no retry of {servers.name} at {rate:g}/s (time budget)")
        elif not report["pass"] and report["disturbed"]:
            log(
                f"{servers.name}: other load {report['cpu_pct']['other']}% "
                "during a failed step; retrying"
            )
            retry = self.step(servers, rate)
            retry["retry_of_disturbed"] = report["cpu_pct"]["other"]
            report = retry
        if report["loadgen_cpu_pct"] > 80 and self.loadgen_procs < 2:
            log("load generator near one full core: using 2 load-generator processes from now on")
            self.loadgen_procs = 2
        return report

    def interleaved_search(
        self, group: dict[str, Servers], repeat: int, prev: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """One knee search of every system in `group`, interleaved: each round runs the
        next step of every system still searching (raw, project, raw, project, ...), so
        that a slow minute of the machine hits both systems, not one."""
        searches: dict[str, Any] = {}
        for name in group:
            p = prev.get(name)
            if p and p.get("pass_rate") is not None:
                # Later repeats start at the previous knee instead of climbing the ladder.
                ladder = [p["pass_rate"]]
                if p.get("fail_rate") is not None:
                    ladder.append(p["fail_rate"])
                top = max(ladder)
                ladder += [r for r in self.args.rates if r > top]
            else:
                ladder = list(self.args.rates)
            searches[name] = KneeSearch(ladder, self.args.bisect, self)
        while True:
            busy = False
            for name, servers in group.items():
                rate = searches[name].next_rate()
                if rate is None:
                    continue
                busy = True
                report = self.run_step(servers, rate)
                report["repeat"] = repeat
                self.steps[name].append(report)
                searches[name].record(rate, report)
            if not busy:
                break
        out = {}
        for name, search in searches.items():
            out[name] = search.result(repeat)
            k = out[name]
            log(
                f"repeat {repeat}: {name} knee {k['knee_msgs_per_s']} msgs/s "
                f"(per sender {k['pass_rate']}, first fail {k['fail_rate']})"
                + (" DISTURBED" if k["disturbed"] else "")
            )
        return out

    def profile(self, servers: Servers, rate: float, connect_s: float) -> dict[str, Any] | None:
        """py-spy on the (first) server process during one more step at `rate`."""
        pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        if not Path(pyspy).exists():
            log("py-spy not installed: no profile (uv pip install py-spy)")
            return None
        raw = self.tmp / f"{servers.name}.pyspy.txt"
        cmd = [
            pyspy,
            "record",
            "--pid",
            str(servers.pids[0]),
            "--duration",
            f"{max(1, int(self.args.duration) - 1)}",
            "--rate",
            "100",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ]
        holder: dict[str, Any] = {}

        def run_pyspy() -> None:
            # Start after the handshakes and the warm-up (as long as earlier steps took).
            time.sleep(self.args.profile_delay + connect_s + self.args.warmup)
            holder["p"] = subprocess.run(cmd, capture_output=True, text=True, check=False)

        thread = threading.Thread(target=run_pyspy)
        thread.start()
        report = self.step(servers, rate)
        thread.join()
        if not raw.exists() or not raw.stat().st_size:
            proc = holder.get("p")
            log(f"py-spy failed: {proc.stderr[-500:] if proc else '?'}")
            return None
        return {"rate": rate, "step": report, **summarize_profile(raw)}


# ---------------------------------------------------------------------------------------


def fmt_other(step: dict[str, Any]) -> str:
    top = ", ".join(f"{n} {v}" for n, v in step.get("other_top", [])[:3])
    return f"other {step['cpu_pct'].get('other')} %: {top}"


def slow_client_run(
    runner: Runner, servers: Servers, knees: list[dict[str, Any]]
) -> dict[str, Any]:
    """The same step twice on the project, alternating: without slow clients, then with one
    socket in ten that never reads (repeated --slow-repeats times)."""
    args = runner.args
    rate = args.slow_rate
    if not rate:
        # 3/4 of the project's median knee (per sender): a rate it keeps with small bodies,
        # and as much traffic as it can take, so that a slow socket's backlog can pass 1 MiB.
        # The run without slow clients at the same rate is the control.
        passed = sorted(k["pass_rate"] for k in knees if k["pass_rate"] is not None)
        knee = passed[(len(passed) - 1) // 2] if passed else args.rates[0]  # lower median
        rate = round(0.75 * knee, 3)
    common = ["--pad", str(args.slow_pad), "--duration", f"{args.slow_duration:g}"]
    pairs = []
    for i in range(args.slow_repeats):
        log(f"slow clients: pair {i + 1} at {rate:g}/sender, bodies +{args.slow_pad} chars")
        base = runner.step(servers, rate, common)
        slow = runner.step(
            servers, rate, [*common, "--slow-every", "10", "--slow-read", f"{args.slow_read:g}"]
        )
        growth = (slow["server_rss_max_kib"] - base["server_rss_max_kib"]) / 1024
        # What the server had to hold per slow socket if nothing was dropped: every frame
        # of its room since it stopped reading (frames are about 250 bytes + the padding).
        room_frames = slow["sent_per_s"] * (args.warmup + args.slow_duration) / 20
        pairs.append(
            {
                "rate_per_sender": rate,
                "base": base,
                "slow": slow,
                "rss_growth_mib": round(growth, 1),
                "bytes_per_slow_socket_approx": int(room_frames * (args.slow_pad + 250)),
                "closed_4408": slow["slow_closed"].get("4408", 0),
            }
        )
        log(
            f"slow clients: others {'PASS' if slow['pass'] else 'FAIL ' + slow['why']}, "
            f"RSS max {base['server_rss_max_kib'] / 1024:.0f} -> "
            f"{slow['server_rss_max_kib'] / 1024:.0f} MiB ({growth:+.1f}), "
            f"slow sockets closed {slow['slow_closed']}"
        )
    return {"pad": args.slow_pad, "duration_s": args.slow_duration, "pairs": pairs}


def _redis_ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5).ping())
    except Exception:
        return False


def recovery_run(args: argparse.Namespace, cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """The project on a redis-server of the bench's own (never the shared one), which is
    SIGKILLed mid-traffic and started again on the same port."""
    import asyncio

    from recovery import run_recovery

    port = free_port()
    cmd = redis_server_command(port)
    logf = open(tmp / "recovery-redis.log", "ab")  # noqa: SIM115
    holder = {"p": subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)}
    wait_redis(port)

    def kill() -> None:
        log(f"recovery: SIGKILL redis-server on :{port}")
        holder["p"].kill()
        holder["p"].wait()

    def restart() -> None:
        log(f"recovery: redis-server again on :{port}")
        holder["p"] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)

    rcfg = {**cfg, "redis_url": f"redis://127.0.0.1:{port}/0"}
    # Two processes: each room has sockets on both, so what Redis lost must be repaired
    # (on one process, local delivery alone would keep every socket complete).
    servers = Servers("project-2", rcfg, tmp, label="recovery")
    try:
        servers.start()
        tokens = json.loads(Path(cfg["tokens"]).read_text())["users"]
        report = asyncio.run(
            run_recovery(
                url=servers.urls,
                host=cfg["domain"],
                tokens=tokens,
                database_url=cfg["database_url"],
                schema="bench",
                kill=kill,
                restart=restart,
                redis_ping=lambda: _redis_ping(port),
                rooms=args.recovery_rooms,
                members=10,
                senders=3,
                rate=2.0,
                kill_after=args.recovery_phase,
                down=2.0,
                after=args.recovery_phase,
                timeout=args.recovery_timeout,
            )
        )
        report["server_alive"] = servers.alive()
        report["server_command"] = servers.commands[0].replace("REDIS_URL", "REDIS_URL=<own>")
    finally:
        servers.stop()
        holder["p"].kill()
        holder["p"].wait()
        logf.close()
    log(
        f"recovery: complete {report['time_to_complete_s']} s after Redis was back "
        f"(all: {report['time_to_complete_all_s']} s), missing {report['missing']}, "
        f"duplicates {report['duplicates']}, closes {report['closes']}, "
        f"resumed {report['resumed_with_since']}"
    )
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--systems", default="raw,project-1,seed")
    ap.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in DEFAULT_RATES),
        help="per-sender messages/s, ascending (the project limits 10/s per socket)",
    )
    ap.add_argument("--bisect", type=int, default=2, help="bisection steps after the first failure")
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--drain", type=float, default=4.0, help="max seconds to wait for stragglers")
    ap.add_argument("--repeats", type=int, default=3, help="knee searches (the median counts)")
    ap.add_argument(
        "--disturbed-pct",
        type=float,
        default=20.0,
        help="a step is disturbed when other processes used more than this %% of a core",
    )
    ap.add_argument("--connect-retries", type=int, default=1)
    ap.add_argument("--retries", type=int, default=1, help="a disturbed failing step again (0/1)")
    ap.add_argument("--halvings", type=int, default=3, help="below the ladder if it fails")
    ap.add_argument("--no-slow", dest="slow", action="store_false", help="skip the slow run")
    ap.add_argument("--slow-rate", type=float, default=0.0, help="per sender; 0: 3/4 of the knee")
    ap.add_argument("--slow-pad", type=int, default=3800, help="characters added to each body")
    ap.add_argument("--slow-duration", type=float, default=30.0)
    ap.add_argument("--slow-read", type=float, default=5.0)
    ap.add_argument("--slow-repeats", type=int, default=1)
    ap.add_argument("--no-recovery", dest="recovery", action="store_false")
    ap.add_argument("--recovery-rooms", type=int, default=10)
    ap.add_argument("--recovery-phase", type=float, default=4.0, help="s before kill and after")
    ap.add_argument("--recovery-timeout", type=float, default=30.0)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of a minute or two: short steps, few rates, 2 repeats, 300 sockets",
    )
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--connect-concurrency", type=int, default=100)
    ap.add_argument(
        "--connect-systems",
        default="raw,project-1,seed",
        help="systems that get the 2000-socket connection test",
    )
    ap.add_argument("--loadgen-procs", type=int, default=1)
    ap.add_argument(
        "--profile",
        default="auto",
        choices=["auto", "off"],
        help="py-spy the project (1 process) at its first failing rate, if installed",
    )
    ap.add_argument("--profile-delay", type=float, default=0.5)
    ap.add_argument(
        "--quiet-threshold",
        type=float,
        default=25.0,
        help="wait before a step until the machine is at most this busy (%% of a core)",
    )
    ap.add_argument(
        "--quiet-budget", type=float, default=120.0, help="total seconds to wait for that"
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=900.0,
        help="seconds the whole run should take at most: past 60 %% no waiting for a quiet "
        "machine, past 70 %% no retries, past 85 %% no bisection",
    )
    ap.add_argument("--results-dir", default=str(BENCH / "results"))
    ap.add_argument("--markdown", default=str(BENCH / "RESULTS.md"))
    args = ap.parse_args()
    if args.quick:
        quick = {
            "rates": "0.5,2",
            "duration": 3.0,
            "warmup": 1.0,
            "drain": 2.0,
            "bisect": 0,
            "repeats": 2,
            "connections": 300,
            "connect_retries": 0,
            "retries": 0,
            "halvings": 1,
            "slow_duration": 3.0,
            "slow_read": 2.0,
            "recovery_rooms": 4,
            "recovery_phase": 1.5,
            "recovery_timeout": 8.0,
            "profile": "off",
            "quiet_budget": 0.0,
            "budget": 240.0,
        }
        for key, value in quick.items():
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
    args.rates = [float(r) for r in args.rates.split(",")]
    names = [n for n in args.systems.split(",") if n]
    for n in names:
        if n not in SYSTEM_ORDER:
            ap.error(f"unknown system {n!r} (choose from {SYSTEM_ORDER})")

    raise_nofile()
    started = time.time()
    database_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tenantchat")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    tmp = Path(tempfile.mkdtemp(prefix="tenantchat-bench-"))
    # The baselines' databases sit next to the project's: bench_raw and bench_seed for the
    # default `tenantchat`, <db>_bench_raw and <db>_bench_seed for any other (so that two
    # checkouts on one PostgreSQL do not empty each other's tables).
    base_db = urlsplit(database_url).path.lstrip("/") or "tenantchat"
    raw_db = "bench_raw" if base_db == "tenantchat" else f"{base_db}_bench_raw"
    seed_db = "bench_seed" if base_db == "tenantchat" else f"{base_db}_bench_seed"
    cfg: dict[str, Any] = {
        "secret": "bench-" + secrets.token_hex(24),
        "database_url": database_url,
        "redis_url": redis_url,
        "raw_url": db_url(database_url, raw_db),
        "seed_url": db_url(database_url, seed_db),
        "domain": "bench.localhost",
        "tokens": tmp / "tokens.json",
        "pg_dbs": [
            base_db,
            raw_db,
            seed_db,
        ],
    }
    log(f"work dir {tmp}")

    # --- provisioning ---
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": cfg["secret"],
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
    }
    # The tokens serve every system (the baselines verify the same JWTs with PyJWT).
    provision_bench_tenant(env, cfg["domain"], cfg["tokens"])
    if "raw" in names:
        ensure_database(database_url, raw_db)
        subprocess.run([PY, str(BENCH / "raw_app.py"), "--init-db", cfg["raw_url"]], check=True)
    if "seed" in names:
        ensure_database(database_url, seed_db)
        seed_env = {
            **env,
            "SEED_DATABASE_URL": cfg["seed_url"],
            "DJANGO_SETTINGS_MODULE": "seedchat.settings",
        }
        subprocess.run(
            [PY, "manage.py", "migrate", "-v", "0"],
            cwd=BENCH / "seed_app",
            env=seed_env,
            check=True,
        )
        execute(cfg["seed_url"], "TRUNCATE seedchat_message RESTART IDENTITY")
        import redis

        r = redis.Redis.from_url(redis_url)
        stale = list(r.scan_iter("asgi-seed*", count=1000))
        if stale:
            r.delete(*stale)
    log("provisioned")

    runner = Runner(args, cfg, tmp)
    systems: dict[str, Any] = {}
    profile: dict[str, Any] | None = None
    notes: list[str] = []
    knees: dict[str, list[dict[str, Any]]] = {}
    slow: dict[str, Any] | None = None
    recovery: dict[str, Any] | None = None
    servers_by: dict[str, Servers] = {}
    ordered = [n for n in SYSTEM_ORDER if n in names]
    try:
        # Every system's server runs for the whole run, so that steps can alternate.
        for name in ordered:
            servers = Servers(name, cfg, tmp)
            log(f"starting {name}")
            servers.start()
            servers_by[name] = servers
            runner.all_servers.append(servers)
            systems[name] = {"server_commands": servers.commands, "steps": []}
            runner.steps[name] = systems[name]["steps"]
            knees[name] = []

        # 1. 2000 sockets, each system on a fresh process (a disturbed one is done again).
        for name in [n for n in ordered if n in args.connect_systems.split(",")]:
            servers = servers_by[name]
            report = runner.connect_only(servers)
            if report["disturbed"] and args.connect_retries and runner.time_left() > 0.5:
                log(f"{name}: connection test disturbed; again on a fresh process")
                servers.restart()
                first = report
                report = runner.connect_only(servers)
                report["retry_of_disturbed"] = first["cpu_pct"].get("other")
            systems[name]["connect"] = report
            systems[name]["server_commands"] = servers.commands
            if not servers.alive():
                raise RuntimeError(f"{name} died in the connection test:\n{servers.log_tail()}")

        # 2. The knee search, interleaved, repeated; the seed-style baseline once.
        prev: dict[str, dict[str, Any]] = {}
        for k in range(1, args.repeats + 1):
            group = {
                n: servers_by[n]
                for n in ordered
                if k == 1 or n in ("raw", "project-1", "project-2")
            }
            if k > 1 and runner.time_left() < 0.3:
                notes.append(f"knee search repeated {k - 1} times only (time budget)")
                break
            for name, res in runner.interleaved_search(group, k, prev).items():
                knees[name].append(res)
                prev[name] = res

        # 3. Where the project's time goes, at its first failing rate.
        if "project-1" in servers_by and args.profile == "auto":
            steps = systems["project-1"]["steps"]
            failing = [s for s in steps if not s["pass"]]
            rate = min((s["rate_per_sender"] for s in failing), default=args.rates[-1])
            connect_s = max((s["connect_s"] for s in steps), default=5.0)
            profile = runner.profile(servers_by["project-1"], rate, connect_s)

        # 4. Slow clients (the project on one process).
        if "project-1" in servers_by and args.slow:
            slow = slow_client_run(runner, servers_by["project-1"], knees.get("project-1", []))
    except Exception as exc:
        log(f"run aborted: {exc}")
        notes.append(f"run aborted: {str(exc).splitlines()[0]}")
    finally:
        for servers in servers_by.values():
            servers.stop()

    # 5. Recovery: the project on a Redis of its own, SIGKILLed and started again.
    if "project-1" in names and args.recovery:
        try:
            recovery = recovery_run(args, cfg, tmp)
        except Exception as exc:
            log(f"recovery run aborted: {exc}")
            notes.append(f"recovery run aborted: {str(exc).splitlines()[0]}")

    notes += runner.skipped
    if runner.quiet.waited:
        notes.append(
            f"waited {runner.quiet.waited:.0f} s in total for other load on the machine to stop "
            f"(threshold {args.quiet_threshold:g} % of a core, budget {args.quiet_budget:g} s)"
        )
    disturbed = [
        f"{n} #{i} ({fmt_other(s)})"
        for n, d in systems.items()
        for i, s in enumerate(d["steps"], 1)
        if s.get("disturbed")
    ]
    if disturbed:
        notes.append(
            f"disturbed steps (other processes over {args.disturbed_pct:g} % of a core): "
            + ", ".join(disturbed)
        )
    notes.append(
        "PostgreSQL and Redis are shared with whatever else runs on this machine; "
        "redis-server CPU includes other clients' (every redis-server counts as ours, "
        "PostgreSQL backends of other databases count as other)."
    )
    notes.append(
        "The load generator opens sockets without permessage-deflate (the same for all systems)."
    )

    now = dt.datetime.now(dt.UTC)
    result = {
        "date": now.strftime("%Y-%m-%d"),
        "started": dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "elapsed_s": round(time.time() - started, 1),
        "command": "DATABASE_URL=... REDIS_URL=... "
        + shlex.join(["python", "bench/run.py", *sys.argv[1:]]),
        "machine": machine_info(database_url, redis_url),
        "packages": package_versions(),
        "params": {
            "duration": args.duration,
            "warmup": args.warmup,
            "rates": args.rates,
            "bisect": args.bisect,
            "connections": args.connections,
            "connect_concurrency": args.connect_concurrency,
            "sweep_connect_concurrency": 20,
            "repeats": args.repeats,
            "disturbed_pct": args.disturbed_pct,
            "quick": args.quick,
        },
        "systems": systems,
        "knees": knees,
        "slow": slow,
        "recovery": recovery,
        "headline": headline(systems, knees),
        "goals": judge(systems, knees, slow, recovery, args.disturbed_pct),
        "profile": profile,
        "notes": notes,
    }
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{result['date']}.json"
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_markdown(result, Path(args.markdown))
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out} and {args.markdown} in {result['elapsed_s']:.0f} s")
    for name, row in result["headline"].items():
        log(f"{name}: {row}")
    for g in result["goals"]:
        log(f"goal: {g['goal']}: {g['measured']} -> {g['verdict']} ({g['detail']})")


if __name__ == "__main__":
    main()
