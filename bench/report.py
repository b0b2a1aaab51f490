"""RESULTS.md from a results JSON of `bench/run.py` (which calls this at the end).

.venv/bin/python bench/report.py bench/results/<date>.json [bench/RESULTS.md]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

SLO_P99_MS = 100.0
LABELS = {
    "raw": "raw baseline (bare ASGI + PostgreSQL + Redis PUBLISH)",
    "project-1": "project, 1 uvicorn process",
    "project-2": "project, 2 uvicorn processes",
    "seed": "seed-style baseline (tutorial consumer, RedisChannelLayer)",
}
# Frames every sample of a thread goes through: left out of the "total" table.
_BOILERPLATE = (
    "<frozen runpy>",
    "click/core.py",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "uvicorn/__main__.py",
    "asyncio/runners.py",
    "threading.py",
    "concurrent/futures/thread.py",
)


def summarize_profile(path: Path, top: int = 30) -> dict[str, Any]:
    """py-spy's collapsed stacks ("f1;f2;f3 count") to the frames with the most samples:
    own (the frame itself was running) and total (the frame was on the stack)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    threads = {"event loop (main thread)": 0, "executor threads (sync_to_async, ORM)": 0}
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        samples += count
        worker = frames[0].startswith("Thread._bootstrap")
        threads[
            "executor threads (sync_to_async, ORM)" if worker else "event loop (main thread)"
        ] += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            if not any(b in frame for b in _BOILERPLATE):
                total[frame] = total.get(frame, 0) + count

    def pct(n: int) -> float:
        return round(100 * n / samples, 1) if samples else 0.0

    def rows(d: dict[str, int]) -> list[list[Any]]:
        return [[k, n, pct(n)] for k, n in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {
        "samples": samples,
        "threads": {k: pct(v) for k, v in threads.items()},
        "top_own": rows(own),
        "top_total": rows(total),
    }


def headline(systems: dict[str, Any]) -> dict[str, Any]:
    def best(name: str) -> dict[str, Any] | None:
        passing = [s for s in systems.get(name, {}).get("steps", []) if s["pass"]]
        return max(passing, key=lambda s: s["sent_per_s"]) if passing else None

    out: dict[str, Any] = {}
    for name in systems:
        b = best(name)
        conn = systems[name].get("connect")
        out[name] = {
            "sustained_msgs_per_s": b["sent_per_s"] if b else 0.0,
            "rate_per_sender": b["rate_per_sender"] if b else None,
            "deliveries_per_s": b["deliveries_per_s"] if b else 0.0,
            "p99_ms": b["p99_ms"] if b else None,
            "connect_s": conn["open_s"] if conn else None,
            "connect_ok": (conn["still_open_after_hold"] == conn["requested"]) if conn else None,
            "rss_per_conn_kib": conn["rss_per_conn_kib"] if conn else None,
        }
    raw = out.get("raw", {}).get("sustained_msgs_per_s") or 0.0
    seed = out.get("seed", {}).get("sustained_msgs_per_s") or 0.0
    for row in out.values():
        r = row["sustained_msgs_per_s"]
        row["vs_raw"] = round(r / raw, 2) if raw else None
        row["vs_seed"] = round(r / seed, 2) if seed else None
    return out


def fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(headers: list[str], right: set[int] | None = None) -> list[str]:
    """Markdown table head; columns in `right` are right-aligned (numbers)."""
    right = right if right is not None else set(range(1, len(headers)))
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    return ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]


def row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def goals(head: dict[str, Any]) -> list[list[str]]:
    p, raw, seed = head.get("project-1"), head.get("raw"), head.get("seed")
    out: list[list[str]] = []
    if not p:
        return out

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    def ratio_row(goal: str, value: float | None, limit: float, above: bool) -> None:
        ok = None if value is None else (value >= limit if above else value <= limit)
        out.append([goal, f"{fmt(value, 2)} x", verdict(ok)])

    if raw:
        ratio_row("sustained rate >= 0.7 x raw", p["vs_raw"], 0.7, True)
    if seed:
        ratio_row("sustained rate >= 5 x seed-style", p["vs_seed"], 5.0, True)
    rss = p["rss_per_conn_kib"]
    out.append(
        [
            "RSS per idle connection <= 64 KiB",
            f"{fmt(rss)} KiB",
            verdict(None if rss is None else rss <= 64),
        ]
    )
    if raw and raw["rss_per_conn_kib"] and rss is not None:
        ratio_row("RSS per idle connection <= 1.5 x raw", rss / raw["rss_per_conn_kib"], 1.5, False)
    if raw and raw["connect_s"] and p["connect_s"] is not None:
        ratio_row(
            "open 2000 sockets <= 2 x raw's time", p["connect_s"] / raw["connect_s"], 2, False
        )
    return out


def cpu_cells(cpu: dict[str, float]) -> list[str]:
    servers = sorted(k for k in cpu if k.startswith("server"))
    return [
        " + ".join(fmt(cpu[k]) for k in servers) or "n/a",
        fmt(cpu.get("postgres")),
        fmt(cpu.get("redis")),
        fmt(cpu.get("loadgen")),
        fmt(cpu.get("other")),
        fmt(cpu.get("machine")),
    ]


def bound(step: dict[str, Any]) -> str:
    """A first reading of what limited a failing step, from its CPU figures."""
    cpu = step["cpu_pct"]
    ncpu = os.cpu_count() or 1
    hot = [k for k, v in cpu.items() if k.startswith("server") and v >= 90]
    parts = []
    if step["ratio"] < 1.0:
        parts.append("frames lost")
    if cpu.get("machine", 0) >= 0.93 * 100 * ncpu:
        parts.append(f"whole machine busy (other: {fmt(cpu.get('other'))} %)")
    if hot:
        parts.append(f"{' and '.join(hot)} at a full core")
    if cpu.get("loadgen", 0) >= 90:
        parts.append("load generator at a full core")
    if not parts or (parts == ["frames lost"]):
        parts.append("no CPU saturated: the server queues work (see the profile)")
    return "; ".join(parts)


def _two_processes(head: dict[str, Any], systems: dict[str, Any]) -> list[str]:
    one, two = head.get("project-1"), head.get("project-2")
    if not one or not two:
        return []
    a, b = one["sustained_msgs_per_s"], two["sustained_msgs_per_s"]
    lines = [
        "",
        "## Two processes",
        "",
        f"The project sustains {fmt(b)} msgs/s on two uvicorn processes against {fmt(a)} on one "
        f"({fmt(b / a, 2) if a else 'n/a'} x). CPU of every process at each system's first "
        "failing step (% of one core):",
        "",
    ]
    lines += table(
        [
            *("system", "msgs/s in", "server(s)", "postgres", "redis", "loadgen", "other"),
            *("machine", "reading"),
        ],
        right={1, 2, 3, 4, 5, 6, 7},
    )
    cpu_bound = False
    for name in ("project-1", "project-2"):
        failing = [s for s in systems[name]["steps"] if not s["pass"]]
        if failing:
            s = min(failing, key=lambda s: s["rate_per_sender"])
            lines.append(row([name, fmt(s["sent_per_s"]), *cpu_cells(s["cpu_pct"]), bound(s)]))
            cpu_bound = cpu_bound or "full core" in bound(s) or "whole machine" in bound(s)
    lines.append("")
    if cpu_bound:
        lines.append(
            "A server process or the whole machine was at its CPU limit: on 2 cores a second "
            "process only helps while a core is left over from the load generator, PostgreSQL "
            "and Redis."
        )
    else:
        lines.append(
            "Neither a server process nor the machine was at a full core, so a second process "
            "cannot raise the figure: the limit is latency inside each process (work queued "
            "behind one thread) or in what both share (PostgreSQL commits, Redis), not CPU."
        )
    return lines


def _system_section(name: str, data: dict[str, Any]) -> list[str]:
    lines = ["", f"### {LABELS.get(name, name)}", ""]
    lines += [f"Server: `{c}`" for c in data["server_commands"]]
    lines.append("")
    lines += table(
        [
            "#",
            "per sender /s",
            "target msgs/s",
            "sent/s",
            "deliveries/s",
            "ratio",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "send lag p99 ms",
            "errors",
            "result",
            "server CPU %",
            "postgres",
            "redis",
            "loadgen",
            "other",
            "machine",
        ],
        right={0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16, 17, 18},
    )
    for i, s in enumerate(data["steps"], 1):
        result = "pass" if s["pass"] else f"fail: {s['why']}"
        if s.get("retry_of_contended"):
            result += f" (2nd try; the 1st had {fmt(s['retry_of_contended'])} % other load)"
        lines.append(
            row(
                [
                    i,
                    f"{s['rate_per_sender']:g}",
                    f"{s['target_msgs_per_s']:g}",
                    fmt(s["sent_per_s"]),
                    fmt(s["deliveries_per_s"]),
                    f"{s['ratio']:.4f}",
                    fmt(s["p50_ms"]),
                    fmt(s["p95_ms"]),
                    fmt(s["p99_ms"]),
                    fmt(s["max_ms"]),
                    fmt(s["send_lag_p99_ms"]),
                    s["errors"] or "",
                    result,
                    *cpu_cells(s["cpu_pct"]),
                ]
            )
        )
    lines += ["", "<details><summary>commands</summary>", ""]
    lines += [f"{i}. `{s['command']}`" for i, s in enumerate(data["steps"], 1)]
    lines += ["", "</details>"]
    return lines


def write_markdown(result: dict[str, Any], path: Path) -> None:
    m = result["machine"]
    head = result["headline"]
    systems = result["systems"]
    p = result["params"]
    packages = ", ".join(f"{k} {v}" for k, v in result["packages"].items())
    lines = [
        "# Benchmark results",
        "",
        "Generated by `bench/run.py` (`make bench`); rerun instead of editing. How to read it:",
        "`bench/README.md`.",
        "",
        f"- **Date**: {result['date']} (started {result['started']}, "
        f"took {result['elapsed_s']:.0f} s)",
        f"- **Machine**: {m['nproc']} cores ({m['model_name']}), {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}; Python {m['python']}, PostgreSQL {m['postgresql']}, "
        f"Redis {m['redis']}",
        f"- **Packages**: {packages}",
        f"- **Command**: `{result['command']}`",
        f"- **Load**: 20 rooms x 20 members (400 authenticated sockets), 10 senders per room, "
        f"each under the project's limit of 10 messages/s per connection; each step "
        f"{p['warmup']:g} s warm-up + {p['duration']:g} s measured. "
        f"SLO: every message reaches every member and p99 <= {SLO_P99_MS:g} ms.",
        "",
        "## Headline",
        "",
        "Sustained rate: the input (messages/s sent into the system, all rooms together) of the "
        "best step that met the SLO; each message is delivered to 20 sockets.",
        "",
    ]
    lines += table(
        [
            "system",
            "sustained msgs/s in",
            "per sender /s",
            "deliveries/s",
            "p99 ms",
            "vs raw",
            "vs seed",
            "open 2000 sockets (s)",
            "RSS / idle conn (KiB)",
        ]
    )
    for name, h in head.items():
        note = "" if h["connect_ok"] in (True, None) else " (some refused or closed)"
        lines.append(
            row(
                [
                    LABELS.get(name, name),
                    fmt(h["sustained_msgs_per_s"]),
                    fmt(h["rate_per_sender"], 3),
                    fmt(h["deliveries_per_s"]),
                    fmt(h["p99_ms"]),
                    fmt(h["vs_raw"], 2),
                    fmt(h["vs_seed"], 2),
                    fmt(h["connect_s"], 2) + note,
                    fmt(h["rss_per_conn_kib"]),
                ]
            )
        )
    g = goals(head)
    if g:
        lines += ["", "## Goals (the project on one process; ratios within this run)", ""]
        lines += table(["goal", "measured", "verdict"], right={1})
        lines += [row(r) for r in g]

    lines += _two_processes(head, systems)
    lines += [
        "",
        f"## Connection test: {p['connections']} sockets opened and held idle",
        "",
        f"{p['connect_concurrency']} handshakes in flight, sockets spread over 20 rooms. "
        "RSS per idle connection = (server VmRSS with all open - VmRSS before) / sockets "
        "opened, after a warm-up of 40 sockets and a 2 s hold.",
        "",
    ]
    lines += table(
        [
            "system",
            "opened",
            "open after hold",
            "time (s)",
            "opens/s",
            "handshake p50 / p99 ms",
            "RSS before -> after (MiB)",
            "RSS/conn KiB",
            "server CPU %",
            "errors",
        ],
        right={1, 2, 3, 4, 5, 6, 7, 8},
    )
    commands = []
    for name, data in systems.items():
        c = data.get("connect")
        if not c:
            continue
        server_cpu = " + ".join(
            fmt(v) for k, v in sorted(c["cpu_pct"].items()) if k.startswith("server")
        )
        errs = {**c["connect_errors"], **{f"close {k}": v for k, v in c["closed"].items()}}
        before, after = c["server_rss_before_kib"] / 1024, c["server_rss_after_kib"] / 1024
        lines.append(
            row(
                [
                    name,
                    c["opened"],
                    c["still_open_after_hold"],
                    fmt(c["open_s"], 2),
                    fmt(c["opens_per_s"]),
                    f"{fmt(c['connect_ms_p50'])} / {fmt(c['connect_ms_p99'])}",
                    f"{before:.0f} -> {after:.0f}",
                    fmt(c["rss_per_conn_kib"]),
                    server_cpu,
                    errs or "",
                ]
            )
        )
        commands.append(f"- {name}: `{c['command']}`")
    lines += ["", "Commands:", "", *commands]

    lines += [
        "",
        "## Rate sweeps",
        "",
        "CPU columns: % of one core over the measured window (the machine has "
        f"{100 * (m['nproc'] or 1)} %): the server process(es), PostgreSQL (postmaster, "
        "auxiliary processes and the backends of the benchmark's databases), redis-server, "
        "the load generator, and `other` = everything else on the machine meanwhile.",
    ]
    for name, data in systems.items():
        lines += _system_section(name, data)

    lines += [
        "",
        "## CPU at the limit",
        "",
        "Each system at its best passing step and its first failing step.",
        "",
    ]
    lines += table(
        [
            "system",
            "step",
            "msgs/s in",
            "server(s)",
            "postgres",
            "redis",
            "loadgen",
            "other",
            "machine",
            "what ran out",
        ],
        right={2, 3, 4, 5, 6, 7, 8},
    )
    for name, data in systems.items():
        steps = data["steps"]
        passing = [s for s in steps if s["pass"]]
        failing = [s for s in steps if not s["pass"]]
        if passing:
            s = max(passing, key=lambda s: s["sent_per_s"])
            lines.append(
                row([name, "best pass", fmt(s["sent_per_s"]), *cpu_cells(s["cpu_pct"]), ""])
            )
        if failing:
            s = min(failing, key=lambda s: s["rate_per_sender"])
            lines.append(
                row([name, "first fail", fmt(s["sent_per_s"]), *cpu_cells(s["cpu_pct"]), bound(s)])
            )

    prof = result.get("profile")
    if prof:
        st = prof["step"]
        threads = ", ".join(f"{k} {v} %" for k, v in prof.get("threads", {}).items())
        lines += [
            "",
            "## Where the project's time goes",
            "",
            f"`py-spy record --rate 100 --format raw` on the one-process server during one "
            f"more step at {prof['rate']:g} messages/s per sender ({fmt(st['sent_per_s'])} "
            f"msgs/s in: p50 {fmt(st['p50_ms'])} ms, p99 {fmt(st['p99_ms'])} ms, server CPU "
            f"{fmt(st['cpu_pct'].get('server'))} %). {prof['samples']} samples (py-spy leaves "
            f"out threads it sees idle). Samples by thread: {threads}.",
            "",
            "Frames that were running (own samples):",
            "",
        ]
        lines += table(["% of samples", "frame"], right={0})
        lines += [row([pct, f"`{name}`"]) for name, _, pct in prof["top_own"][:15]]
        lines += ["", "Frames on the stack (total samples; start-up frames left out):", ""]
        lines += table(["% of samples", "frame"], right={0})
        lines += [row([pct, f"`{name}`"]) for name, _, pct in prof["top_total"][:30]]

    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    lines.append("")
    # The section that bench/fairness.py writes between its markers survives a regeneration.
    start, end = "<!-- fairness:start -->", "<!-- fairness:end -->"
    previous = path.read_text() if path.exists() else ""
    if start in previous and end in previous:
        kept = previous[previous.index(start) : previous.index(end) + len(end)]
        lines += [kept, ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    data = json.loads(Path(sys.argv[1]).read_text())
    data["headline"] = headline(data["systems"])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent / "RESULTS.md"
    write_markdown(data, out)
