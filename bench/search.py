"""Search latency on 1,000,000 messages (issue 12, PROTOCOL.md section 6 "Search").

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/tenantchat REDIS_URL=redis://... \\
        .venv/bin/python bench/search.py               # load (or reuse) and measure
    .venv/bin/python bench/search.py --reload          # load the messages again
    .venv/bin/python bench/search.py --help            # sizes, query counts

Works in a database of its own next to the given one (`<db>_search_bench`, created if
missing and kept, so a second run reuses the loaded tenant): `migrate_schemas --shared`, then
`manage.py bench_provision` makes the tenant `search_bench` (`search-bench.localhost`) and
its users. The load is SQL only: `--rooms` rooms (the last 5 private; the searching user is a
member of two of them), then `--messages` messages in INSERT ... SELECT generate_series
statements of 100,000 rows, each body 4 to 16 words drawn from a 5,000-word list with a
log-uniform (Zipf-like) law, plus one ticket word `tk<6 digits>` found in exactly 5 messages.
For the load the seq trigger is disabled and the rows carry their own gap-free `seq`
(message i goes to room i mod rooms, as seq i div rooms + 1); each room's `last_seq` is set
after, then the trigger is enabled again. The GIN index is dropped before the load and made
again after it from its own definition (pg_indexes), then VACUUM ANALYZE (what autovacuum
would do after a million inserts).

Then ONE uvicorn process (`DEBUG=0`) serves the tenant, and a single keep-alive client sends
`--queries` queries of each kind one after another (after 20 unmeasured ones), with and
without `room`, and reports p50/p99/max of the time to the full response. Writes
`bench/SEARCH_RESULTS.md` (with `EXPLAIN (ANALYZE, BUFFERS)` of a rare and a common query,
made by chat/search.py's own query builder) and `bench/results/search-<date>.json`.
Not part of `make test` or `make bench`. Leaves no process running.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
SCHEMA, DOMAIN = "search_bench", "search-bench.localhost"
USERS = 20
VOCABULARY = 5000
PRIVATE_ROOMS = 5
CHUNK = 100_000
TICKETS = 200_000  # each ticket word is in messages/TICKETS messages (5 at 1,000,000)
TICKET_STEP = 2654435761  # odd and not a multiple of 5: i -> i*step mod TICKETS is a cycle
WARMUP = 20
BASELINE = "GET /api/me/ (no search: the floor)"
RARE = "rare (ticket word, 5 messages)"
COMMON_KIND = "common word (rank 1-20)"
WINDOW_COMPARED = (COMMON_KIND, "3-letter prefix (rank 100-1000)")

# The most frequent words first (ranks 1..), then made-up words, all distinct.
_COMMON_TEXT = (
    "the to and a of in is it you that for on we this with be can i have are not do at deploy "
    "will just but so me what if from meeting about my an all get was up today now there one "
    "out they new when our review build like know release please think server fix time back "
    "test staging thanks should could would customer merge need ticket issue yes no team call "
    "update check branch data report design lunch week tomorrow friday monday production bug"
)
COMMON = _COMMON_TEXT.split()


def log(msg: str) -> None:
    print(f"[search {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def vocabulary(size: int) -> list[str]:
    rng = random.Random(12)
    words, seen = list(dict.fromkeys(COMMON)), set(COMMON)
    consonants, vowels = "bcdfghjklmnprstvz", "aeiou"
    while len(words) < size:
        word = "".join(
            rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 4))
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- database, tenant and load -------------------------------------------------------------


def bench_database_url(url: str) -> str:
    parts = urlsplit(url)
    name = (parts.path.lstrip("/") or "tenantchat") + "_search_bench"
    return urlunsplit(parts._replace(path=f"/{name}"))


def ensure_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
            log(f"created database {name}")


def provision(env: dict[str, str], tokens: Path) -> None:
    subprocess.run(
        [PY, "manage.py", "migrate_schemas", "--shared", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [PY, "manage.py", "bench_provision", "--tenant", SCHEMA, "--domain", DOMAIN,
         "--users", str(USERS), "--prefix", "sb", "--tokens-out", str(tokens)],
        cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def load(
    conn: psycopg.Connection[Any], args: argparse.Namespace, words: list[str]
) -> dict[str, Any]:
    """Rooms and messages in SQL; returns the seconds of each phase."""
    timings: dict[str, float] = {}
    conn.execute(f"SET search_path TO {SCHEMA}")  # type: ignore[arg-type]
    conn.execute("SET synchronous_commit TO off")
    conn.execute("SET maintenance_work_mem TO '512MB'")
    started = time.perf_counter()
    conn.execute("TRUNCATE chat_message, chat_room RESTART IDENTITY CASCADE")
    user_ids = [r[0] for r in conn.execute("SELECT id FROM auth_user ORDER BY id").fetchall()]
    room_ids = [
        r[0]
        for r in conn.execute(
            "INSERT INTO chat_room (slug, name, is_private, created_at, last_seq) "
            "SELECT 'room' || lpad(k::text, 2, '0'), '', k >= %s, now(), 0 "
            "FROM generate_series(0, %s - 1) AS k ORDER BY k RETURNING id",
            [args.rooms - PRIVATE_ROOMS, args.rooms],
        ).fetchall()
    ]
    # The searching user (the first) is a member of the first two private rooms.
    for room_id in room_ids[-PRIVATE_ROOMS:][:2]:
        conn.execute(
            "INSERT INTO chat_membership (room_id, user_id, created_at) VALUES (%s, %s, now())",
            [room_id, user_ids[0]],
        )
    index = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = %s",
        [SCHEMA, "chat_message_search_gin"],
    ).fetchone()
    if index is None:
        raise RuntimeError("no chat_message_search_gin: is migration 0005_message_search applied?")
    conn.execute("DROP INDEX chat_message_search_gin")
    conn.execute("ALTER TABLE chat_message DISABLE TRIGGER chat_message_assign_seq")
    timings["prepare"] = time.perf_counter() - started

    started = time.perf_counter()
    for first in range(1, args.messages + 1, CHUNK):
        last = min(first + CHUNK - 1, args.messages)
        conn.execute(
            """
            INSERT INTO chat_message (room_id, user_id, seq, body, created_at)
            SELECT (%(rooms)s::bigint[])[(g.i - 1) %% %(nrooms)s + 1],
                   (%(users)s::bigint[])[(g.i * 7) %% %(nusers)s + 1],
                   (g.i - 1) / %(nrooms)s + 1,
                   (SELECT string_agg((%(words)s::text[])[floor(power(%(nwords)s, random()))::int],
                                      ' ')
                      FROM generate_series(1, 4 + (g.i * 7) %% 13))
                   || ' tk' || lpad(((g.i * %(step)s) %% %(tickets)s)::text, 6, '0'),
                   now() - make_interval(secs => (%(total)s - g.i) * 30)
              FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g(i)
            """,
            {
                "rooms": room_ids, "nrooms": len(room_ids), "users": user_ids,
                "nusers": len(user_ids), "words": words, "nwords": len(words),
                "step": TICKET_STEP, "tickets": TICKETS, "total": args.messages,
                "first": first, "last": last,
            },
        )  # fmt: skip
        conn.commit()
        log(f"  {last:,} messages")
    timings["insert"] = time.perf_counter() - started

    started = time.perf_counter()
    conn.execute(
        "UPDATE chat_room r SET last_seq = m.seq FROM "
        "(SELECT room_id, max(seq) AS seq FROM chat_message GROUP BY room_id) m "
        "WHERE m.room_id = r.id"
    )
    conn.execute("ALTER TABLE chat_message ENABLE TRIGGER chat_message_assign_seq")
    conn.commit()
    timings["last_seq"] = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute(index[0])  # type: ignore[arg-type]
    conn.commit()
    timings["gin_index"] = time.perf_counter() - started
    started = time.perf_counter()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE chat_message")
    conn.autocommit = False
    timings["vacuum_analyze"] = time.perf_counter() - started
    return {k: round(v, 1) for k, v in timings.items()}


def sizes(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    conn.execute(f"SET search_path TO {SCHEMA}")  # type: ignore[arg-type]
    row = conn.execute(
        "SELECT count(*), pg_size_pretty(pg_table_size('chat_message')), "
        "pg_size_pretty(pg_relation_size('chat_message_search_gin')), "
        "avg(length(body))::int FROM chat_message"
    ).fetchone()
    assert row is not None
    return {"messages": row[0], "table": row[1], "gin_index": row[2], "avg_body_chars": row[3]}


def matches(conn: psycopg.Connection[Any], q: str, room: str | None) -> int:
    """How many stored messages a query matches (all rooms, or one), by the same tsquery."""
    from chat.search import prefix_tsquery

    terms = [
        r[0] for r in conn.execute("SELECT lexeme FROM unnest(to_tsvector('simple', %s))", [q])
    ]
    sql = (
        "SELECT count(*) FROM chat_message WHERE deleted_at IS NULL "
        "AND search_vector @@ %s::tsquery"
    )
    params: list[Any] = [prefix_tsquery(terms)]
    if room:
        sql += " AND room_id = (SELECT id FROM chat_room WHERE slug = %s)"
        params.append(room)
    row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0


# --- queries -------------------------------------------------------------------------------


def query_sets(
    words: list[str], rooms: list[str], all_rooms: list[str], count: int
) -> dict[str, list[dict[str, str]]]:
    """Deterministic queries of each kind; `room` ones pick a room the user can read."""
    rng = random.Random(34)
    inverse = pow(TICKET_STEP, -1, TICKETS)

    def ticket_room(ticket: int) -> str:
        # Message i has ticket i*step mod TICKETS, so ticket t is in messages i = t*inverse
        # (mod TICKETS), all in the same room (TICKETS is a multiple of the room count).
        i = (ticket * inverse) % TICKETS or TICKETS
        return f"room{(i - 1) % len(all_rooms):02d}"

    def tickets() -> str:
        return f"tk{rng.randrange(TICKETS):06d}"

    def ticket_in_a_readable_room() -> dict[str, str]:
        while True:
            ticket = rng.randrange(TICKETS)
            if ticket_room(ticket) in rooms:
                return {"q": f"tk{ticket:06d}", "room": ticket_room(ticket)}

    kinds = {
        "rare (ticket word, 5 messages)": tickets,
        "uncommon word (rank 2000-5000)": lambda: rng.choice(words[2000:]),
        "common word (rank 1-20)": lambda: rng.choice(words[:20]),
        "two words (ranks 20-300 each)": lambda: " ".join(rng.sample(words[20:300], 2)),
        "3-letter prefix (rank 100-1000)": lambda: rng.choice(words[100:1000])[:3],
    }
    out: dict[str, list[dict[str, str]]] = {}
    for name, make in kinds.items():
        out[name] = [{"q": make()} for _ in range(count)]
        if make is tickets:  # a random room would hold none of a ticket's 5 messages
            out[name + ", its room"] = [ticket_in_a_readable_room() for _ in range(count)]
        else:
            out[name + ", one room"] = [
                {"q": make(), "room": rng.choice(rooms)} for _ in range(count)
            ]
    return out


def measure(port: int, token: str, sets: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """Each kind's queries one after another on one keep-alive connection; `GET /api/me/`
    first, as the floor (authentication, tenant, JSON) that every answer pays."""
    headers = {"Host": DOMAIN, "Authorization": f"Bearer {token}"}
    results: dict[str, Any] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
        warmup = [q for queries in sets.values() for q in queries[:2]]
        for params in warmup[:WARMUP]:
            client.get("/api/search/", params=params)
        count = len(next(iter(sets.values())))
        runs = {BASELINE: ("/api/me/", [{}] * count)}
        runs.update({name: ("/api/search/", queries) for name, queries in sets.items()})
        for name, (path, queries) in runs.items():
            latencies, hits = [], []
            started = time.perf_counter()
            for params in queries:
                t0 = time.perf_counter()
                response = client.get(path, params=params)
                latencies.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{params}: {response.status_code} {response.text[:200]}")
                body = response.json()
                hits.append(len(body) if isinstance(body, list) else 1)
            results[name] = {
                "queries": len(queries),
                "p50_ms": round(pct(latencies, 50), 1),
                "p99_ms": round(pct(latencies, 99), 1),
                "max_ms": round(max(latencies), 1),
                "mean_results": round(statistics.mean(hits), 1),
                "seconds": round(time.perf_counter() - started, 1),
                "examples": [q for q in queries[:3]],
            }
            log(f"  {name}: p50 {results[name]['p50_ms']} ms, p99 {results[name]['p99_ms']} ms")
    return results


def setup_django(env: dict[str, str]) -> None:
    """This process uses chat/search.py itself (the tsquery, the EXPLAINed query)."""
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "SECRET_KEY", "DEBUG")})
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def explain_plans(user_id: int, queries: list[tuple[dict[str, str], int]]) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of chat/search.py's own query (`search_sql`) in the bench
    tenant, for each (params, CHAT_SEARCH_RANK_WINDOW)."""
    from django.conf import settings
    from django.db import connection

    from chat.models import Room
    from chat.search import search_sql, search_terms
    from chat.services import Actor
    from tenants.context import run_in_schema

    actor = Actor(id=user_id, username="sb0000", is_admin=False)

    def plan(params: dict[str, str]) -> str:
        room = Room.objects.get(slug=params["room"]) if "room" in params else None
        terms = search_terms(params["q"])
        sql, sql_params = search_sql(actor=actor, terms=terms, room=room, limit=20)
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", sql_params)
            return "\n".join(row[0] for row in cursor.fetchall())

    plans = {}
    for params, window in queries:
        settings.CHAT_SEARCH_RANK_WINDOW = window
        label = "&".join(f"{k}={v}" for k, v in params.items())
        plans[f"{label}, CHAT_SEARCH_RANK_WINDOW={window}"] = run_in_schema(SCHEMA, plan, params)
    return plans


def serve_and_measure(
    env: dict[str, str], tmp: Path, token: str, sets: dict[str, list[dict[str, str]]]
) -> dict[str, Any]:
    """One uvicorn process with `env`, measured, stopped."""
    port = free_port()
    server_args = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    with open(tmp / f"server-{port}.log", "wb") as logf:
        server = subprocess.Popen(
            server_args, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not start; see {tmp}/server-{port}.log")
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    break
                time.sleep(0.2)
            return measure(port, token, sets)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


# --- report --------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Search latency (bench/search.py)",
        "",
        f"{result['date']}, `{result['command']}`. Machine: {result['machine']}.",
        "",
        f"Tenant `{SCHEMA}`: {result['sizes']['messages']:,} messages in {result['rooms']} rooms "
        f"({PRIVATE_ROOMS} private; the searching user reads {result['rooms'] - PRIVATE_ROOMS + 2}"
        f" of them), bodies of {result['sizes']['avg_body_chars']} characters on average; "
        f"table {result['sizes']['table']} (with its TOAST), GIN index "
        f"{result['sizes']['gin_index']}.",
        "",
    ]
    load = result["load"]
    if load:
        total = sum(load.values())
        lines += [
            f"Load: {total:.0f} s in all ("
            + ", ".join(f"{k} {v} s" for k, v in load.items())
            + ").",
            "",
        ]
    else:
        lines += ["Load: reused from an earlier run (`--reload` loads again).", ""]
    lines += [
        f"One uvicorn process (`DEBUG=0`), one keep-alive client, queries one after another; "
        f"{result['queries']} queries of each kind after {WARMUP} unmeasured ones. Latency is the "
        "client's time to the full response (auth, tenant, query, JSON). `matches` is how many "
        'stored messages the first 3 queries of the kind match. Unless the kind says "every '
        'match ranked" (a second server with `CHAT_SEARCH_RANK_WINDOW=0`), the default '
        "`CHAT_SEARCH_RANK_WINDOW=10000` ranks only the newest 10,000 matches.",
        "",
        "| kind | p50 ms | p99 ms | max ms | results per answer | matches (3 examples) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in result["results"].items():
        found = ", ".join(f"{m:,}" for m in row["matches"]) or "-"
        lines.append(
            f"| {name} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} | "
            f"{row['mean_results']} | {found} |"
        )
    lines += [
        "",
        f"Measuring took {result['measure_seconds']:.0f} s; the whole run "
        f"{result['total_seconds']:.0f} s.",
        "",
    ]
    for query, plan in result["plans"].items():
        lines += [f"## EXPLAIN (ANALYZE, BUFFERS), `{query}`", "", "```", plan, "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200, help="per kind (default 200)")
    parser.add_argument("--reload", action="store_true", help="load the messages again")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.rooms <= PRIVATE_ROOMS or TICKETS % args.rooms:
        parser.error(f"--rooms must be more than {PRIVATE_ROOMS} and divide {TICKETS}")

    database_url = bench_database_url(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tenantchat")
    )
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "bench-" + secrets.token_hex(24),
           "DATABASE_URL": database_url, "CHANNEL_PREFIX": "tcsearch",
           "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    setup_django(env)
    tmp = Path(tempfile.mkdtemp(prefix="tenantchat-search-"))
    wall = time.perf_counter()
    ensure_database(database_url)
    provision(env, tmp / "tokens.json")
    tokens = json.loads((tmp / "tokens.json").read_text())["users"]
    words = vocabulary(VOCABULARY)

    with psycopg.connect(database_url) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")  # type: ignore[arg-type]
        row = conn.execute("SELECT count(*), count(DISTINCT room_id) FROM chat_message").fetchone()
        loaded = row is not None and row[0] == args.messages and row[1] == args.rooms
        timings: dict[str, Any] = {}
        if args.reload or not loaded:
            log(f"loading {args.messages:,} messages into {args.rooms} rooms")
            timings = load(conn, args, words)
            log(f"loaded: {timings}")
        else:
            log("reusing the loaded messages (--reload to load again)")
        conn.commit()
        stats = sizes(conn)
        user = conn.execute("SELECT id FROM auth_user WHERE username = 'sb0000'").fetchone()
        assert user is not None
        user_id = int(user[0])
        readable = [
            r[0]
            for r in conn.execute(
                "SELECT slug FROM chat_room WHERE NOT is_private OR id IN "
                "(SELECT room_id FROM chat_membership WHERE user_id = %s) ORDER BY slug",
                [user_id],
            ).fetchall()
        ]
        every_room = [f"room{k:02d}" for k in range(args.rooms)]
        sets = query_sets(words, readable, every_room, args.queries)
        counts = {
            name: [matches(conn, p["q"], p.get("room")) for p in queries[:3]]
            for name, queries in sets.items()
        }
        conn.commit()
        server_version = conn.info.server_version

    log(f"measuring {args.queries} queries per kind")
    started = time.perf_counter()
    token = tokens[0]["access"]
    results = serve_and_measure(env, tmp, token, sets)
    # The same common-word queries with every match ranked, for comparison.
    unwindowed = {f"{name}, every match ranked": sets[name] for name in WINDOW_COMPARED}
    log("measuring the common words again with CHAT_SEARCH_RANK_WINDOW=0")
    again = serve_and_measure({**env, "CHAT_SEARCH_RANK_WINDOW": "0"}, tmp, token, unwindowed)
    results.update({k: v for k, v in again.items() if k != BASELINE})
    measure_seconds = time.perf_counter() - started
    for name, row in results.items():
        row["matches"] = counts.get(name.removesuffix(", every match ranked"), [])
    rare = sets[RARE][0]
    common = sets[COMMON_KIND][0]
    plans = explain_plans(user_id, [(rare, 10_000), (common, 10_000), (common, 0)])
    result = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/search.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores shared with other work, PostgreSQL "
        f"{server_version // 10000}.{server_version % 10000}",
        "rooms": args.rooms,
        "queries": args.queries,
        "sizes": stats,
        "load": timings,
        "results": results,
        "measure_seconds": round(measure_seconds, 1),
        "total_seconds": round(time.perf_counter() - wall, 1),
        "plans": plans,
    }
    text = markdown(result)
    print(text)
    if not args.no_write:
        out = BENCH / "results" / f"search-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        (BENCH / "SEARCH_RESULTS.md").write_text(text)
        log(f"wrote {out} and bench/SEARCH_RESULTS.md")


if __name__ == "__main__":
    main()
