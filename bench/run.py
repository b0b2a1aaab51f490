"""`make bench`: the project against two baselines, in one run, on this machine.

    DATABASE_URL=postgresql://... REDIS_URL=redis://... .venv/bin/python bench/run.py

For each system (raw baseline, the project on one uvicorn process, the project on two,
the seed-style baseline): start its uvicorn, (a) open 2000 authenticated sockets and hold
them (time to open all, server RSS per idle connection), (b) sweep the input rate at
20 rooms x 20 members with 10 senders per room, each sender under the project's
per-connection rate limit, stepping the per-sender rate up until a step fails, then
bisecting between the last pass and the first failure. A step passes when every message
reached every member (ratio 1.0, no error frame, no failed handshake), the load generator
sent at >= 90 % of the asked rate, and p99 send-to-receive latency <= 100 ms.

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
from report import SLO_P99_MS, headline, summarize_profile, write_markdown  # noqa: E402

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

    def __init__(self, name: str, cfg: dict[str, Any], logdir: Path) -> None:
        self.name = name
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
            logf = open(self.logdir / f"{self.name}-{i}.log", "wb")  # noqa: SIM115
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
        for path in sorted(self.logdir.glob(f"{self.name}-*.log")):
            text = path.read_text(errors="replace").splitlines()
            out.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

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

    def time_left(self) -> float:
        """Fraction of the run's time budget (--budget) still left."""
        return 1.0 - (time.monotonic() - self.started) / self.args.budget

    def wait_quiet(self) -> float | None:
        # Waiting for a quiet machine is a luxury of the first 60 % of the budget.
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
        log(
            f"{servers.name}: {report['opened']} sockets in {report['open_s']} s, "
            f"RSS/conn {report['rss_per_conn_kib']} KiB, "
            f"still open {report['still_open_after_hold']}, "
            f"errors {report['connect_errors']}"
        )
        return report

    def step(self, servers: Servers, rate: float) -> dict[str, Any]:
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
            "5",
            "--concurrency",
            "20",
            "--procs",
            str(self.loadgen_procs),
        ]
        report, command = self.loadgen(servers, extra, timeout=240)
        report["command"] = command
        report["busy_before_pct"] = quiet
        cpu = report["cpu_pct"]
        ours = sum(v for k, v in cpu.items() if k != "machine")
        cpu["other"] = round(max(0.0, cpu["machine"] - ours), 1)
        reasons = []
        if report["ratio"] != 1.0:
            reasons.append(f"ratio {report['ratio']}")
        if report["error_frames"]:
            reasons.append(f"errors {report['errors']}")
        if report["connect_errors"] or report["connected"] != 400:
            reasons.append(f"connected {report['connected']}/400 {report['connect_errors']}")
        if report["sent_per_s"] < 0.9 * report["target_msgs_per_s"]:
            # the load generator could not keep its schedule (or the server pushed back)
            reasons.append(f"sent {report['sent_per_s']}/s < 90% of {report['target_msgs_per_s']}")
        if report["p99_ms"] > SLO_P99_MS:
            reasons.append(f"p99 {report['p99_ms']} ms")
        report["pass"] = not reasons
        report["why"] = "; ".join(reasons)
        log(
            f"{servers.name} rate {rate:g}/sender ({report['target_msgs_per_s']:g} msg/s): "
            f"{'PASS' if report['pass'] else 'FAIL ' + report['why']} | "
            f"sent {report['sent_per_s']}/s "
            f"deliv {report['deliveries_per_s']}/s p50 {report['p50_ms']} p99 {report['p99_ms']} "
            f"cpu {cpu}"
        )
        if not servers.alive():
            raise RuntimeError(f"{servers.name} died during a step:\n{servers.log_tail()}")
        return report

    def run_step(self, servers: Servers, rate: float) -> dict[str, Any]:
        report = self.step(servers, rate)
        # Somebody else's load (another test run) during a failed step: measure it again.
        contended = report["cpu_pct"]["other"] > self.args.retry_other
        if not report["pass"] and contended and self.time_left() <= 0.3:
            self.skipped.append(f"no retry of {servers.name} at {rate:g}/s (time budget)")
        elif not report["pass"] and contended:
            log(
                f"{servers.name}: other load {report['cpu_pct']['other']}% "
                "during a failed step; retrying"
            )
            retry = self.step(servers, rate)
            retry["retry_of_contended"] = report["cpu_pct"]["other"]
            report = retry
        if report["loadgen_cpu_pct"] > 80 and self.loadgen_procs < 2:
            log("load generator near one full core: using 2 load-generator processes from now on")
            self.loadgen_procs = 2
        return report

    def sweep(self, servers: Servers) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        last_pass: float | None = None
        first_fail: float | None = None
        for rate in self.args.rates:
            report = self.run_step(servers, rate)
            steps.append(report)
            if report["pass"]:
                last_pass = rate
            else:
                first_fail = rate
                break
        if first_fail is not None and last_pass is None:
            # Even the lowest rate failed: go down by halves a few times.
            rate = first_fail
            for _ in range(3):
                rate = round(rate / 2, 3)
                report = self.run_step(servers, rate)
                steps.append(report)
                if report["pass"]:
                    last_pass = rate
                    break
                first_fail = rate
        if first_fail is not None and last_pass is not None:
            lo, hi = last_pass, first_fail
            for _ in range(self.args.bisect):
                if self.time_left() < 0.15:
                    self.skipped.append(f"bisection of {servers.name} cut short (time budget)")
                    break
                mid = round((lo + hi) / 2, 3)
                if mid in (lo, hi):
                    break
                report = self.run_step(servers, mid)
                steps.append(report)
                if report["pass"]:
                    lo = mid
                else:
                    hi = mid
        return steps

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--systems", default=",".join(SYSTEM_ORDER))
    ap.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in DEFAULT_RATES),
        help="per-sender messages/s, ascending (the project limits 10/s per socket)",
    )
    ap.add_argument("--bisect", type=int, default=2, help="bisection steps after the first failure")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
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
        "--retry-other",
        type=float,
        default=30.0,
        help="repeat a failed step once if other processes used more than this %% of a core",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=840.0,
        help="seconds the whole run should take at most: past 60 %% no waiting for a quiet "
        "machine, past 70 %% no retries, past 85 %% no bisection",
    )
    ap.add_argument("--results-dir", default=str(BENCH / "results"))
    ap.add_argument("--markdown", default=str(BENCH / "RESULTS.md"))
    args = ap.parse_args()
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
    cfg: dict[str, Any] = {
        "secret": "bench-" + secrets.token_hex(24),
        "database_url": database_url,
        "redis_url": redis_url,
        "raw_url": db_url(database_url, "bench_raw"),
        "seed_url": db_url(database_url, "bench_seed"),
        "domain": "bench.localhost",
        "tokens": tmp / "tokens.json",
        "pg_dbs": [
            urlsplit(database_url).path.lstrip("/") or "tenantchat",
            "bench_raw",
            "bench_seed",
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
            cfg["domain"],
            "--users",
            "400",
            "--tokens-out",
            str(cfg["tokens"]),
            "--reset-chat",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if "raw" in names:
        ensure_database(database_url, "bench_raw")
        subprocess.run([PY, str(BENCH / "raw_app.py"), "--init-db", cfg["raw_url"]], check=True)
    if "seed" in names:
        ensure_database(database_url, "bench_seed")
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
    for name in [n for n in SYSTEM_ORDER if n in names]:
        servers = Servers(name, cfg, tmp)
        log(f"starting {name}")
        servers.start()
        data: dict[str, Any] = {"server_commands": servers.commands, "steps": []}
        systems[name] = data
        try:
            if name in args.connect_systems.split(","):
                data["connect"] = runner.connect_only(servers)
                if not servers.alive():
                    raise RuntimeError(f"{name} died in the connection test:\n{servers.log_tail()}")
            data["steps"] = runner.sweep(servers)
            if name == "project-1" and args.profile == "auto":
                steps = data["steps"]
                failing = [s for s in steps if not s["pass"]]
                rate = min((s["rate_per_sender"] for s in failing), default=args.rates[-1])
                connect_s = max((s["connect_s"] for s in steps), default=5.0)
                profile = runner.profile(servers, rate, connect_s)
        except Exception as exc:
            log(f"{name}: {exc}")
            notes.append(f"{name}: run aborted: {str(exc).splitlines()[0]}")
        finally:
            servers.stop()

    notes += runner.skipped
    if runner.quiet.waited:
        notes.append(
            f"waited {runner.quiet.waited:.0f} s in total for other load on the machine to stop "
            f"(threshold {args.quiet_threshold:g} % of a core, budget {args.quiet_budget:g} s)"
        )
    contended = [
        f"{n} step {i}"
        for n, d in systems.items()
        for i, s in enumerate(d["steps"], 1)
        if s["cpu_pct"].get("other", 0) > args.retry_other
    ]
    if contended:
        notes.append(
            "other processes used over "
            f"{args.retry_other:g} % of a core during: {', '.join(contended)}; "
            "those rows are less reliable"
        )
    notes.append(
        "PostgreSQL and Redis are shared with whatever else runs on this machine; "
        "redis-server CPU includes other clients'."
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
        },
        "systems": systems,
        "headline": headline(systems),
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


if __name__ == "__main__":
    main()
