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


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def headline(
    systems: dict[str, Any], knees: dict[str, list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """Per system: the median knee over the repeats (all of them; the goals below judge
    only undisturbed ones), the connection test, the median CPU per delivered frame."""
    knees = knees or {}

    def best(name: str) -> dict[str, Any] | None:
        passing = [s for s in systems.get(name, {}).get("steps", []) if s["pass"]]
        return max(passing, key=lambda s: s["sent_per_s"]) if passing else None

    out: dict[str, Any] = {}
    for name in systems:
        conn = systems[name].get("connect")
        ks = knees.get(name) or []
        # the undisturbed repeats if there are any (flagged otherwise)
        clean = [k for k in ks if not k["disturbed"]]
        use = clean or ks
        if use:
            sustained = _median([k["knee_msgs_per_s"] for k in use]) or 0.0
            rates = [k["pass_rate"] for k in use if k["pass_rate"] is not None]
            per_sender = _median(rates)
        else:
            b = best(name)
            sustained = b["sent_per_s"] if b else 0.0
            per_sender = b["rate_per_sender"] if b else None
        cpu = [
            s["cpu_us_per_frame"]
            for s in systems[name].get("steps", [])
            if s["pass"] and s.get("cpu_us_per_frame")
        ]
        out[name] = {
            "sustained_msgs_per_s": sustained,
            "sustained_disturbed": bool(ks) and not clean,
            "knees": [k["knee_msgs_per_s"] for k in ks],
            "knees_disturbed": [k["disturbed"] for k in ks],
            "rate_per_sender": per_sender,
            "cpu_us_per_frame": _median(cpu),
            "connect_s": conn["open_s"] if conn else None,
            "connect_ok": (conn["still_open_after_hold"] == conn["requested"]) if conn else None,
            "rss_per_conn_kib": conn["rss_per_conn_kib"] if conn else None,
        }
    raw = out.get("raw", {}).get("sustained_msgs_per_s") or 0.0
    seed = out.get("seed", {}).get("sustained_msgs_per_s") or 0.0
    for r in out.values():
        v = r["sustained_msgs_per_s"]
        r["vs_raw"] = round(v / raw, 2) if raw else None
        r["vs_seed"] = round(v / seed, 2) if seed else None
    return out


MET, NOT_MET, DISTURBED = "met", "**not met**", "disturbed (not judged)"


def _verdict(ok: bool | None, disturbed: bool) -> str:
    if ok is None:
        return "n/a"
    if disturbed:
        # Neither "met" nor "not met" on a measurement someone else's load moved.
        return DISTURBED
    return MET if ok else NOT_MET


def _ratio_goal(
    goal: str, pairs: list[tuple[float | None, bool]], limit: float, above: bool, what: str
) -> dict[str, Any]:
    """pairs: (ratio, disturbed) per repeat; the verdict uses the median of the undisturbed."""
    valid = [(r, d) for r, d in pairs if r is not None]
    clean = [r for r, d in valid if not d]
    use = clean or [r for r, _ in valid]
    value = _median(use)
    ok = None if value is None else (value >= limit if above else value <= limit)
    shown = ", ".join(f"{r:.2f}{' (disturbed)' if d else ''}" for r, d in valid)
    detail = (
        f"median of {len(clean)} undisturbed of {len(valid)} {what}: [{shown}]"
        if clean
        else f"every {what} disturbed: [{shown}]"
        if valid
        else f"no {what} where the baseline had a knee above 0"
    )
    return {
        "goal": goal,
        "measured": f"{value:.2f} x" if value is not None else "n/a",
        "value": value,
        "verdict": _verdict(ok, not clean),
        "detail": detail,
    }


def _same_rate_cpu(systems: dict[str, Any], repeat: int) -> tuple[float | None, bool, str]:
    """CPU per delivered frame, project / raw, at the highest per-sender rate of this repeat
    that both passed (else the lowest both ran)."""

    def by_rate(name: str) -> dict[float, dict[str, Any]]:
        return {
            s["rate_per_sender"]: s
            for s in systems.get(name, {}).get("steps", [])
            if s.get("repeat") == repeat and s.get("cpu_us_per_frame")
        }

    raw, proj = by_rate("raw"), by_rate("project-1")
    both = [r for r in raw if r in proj]
    if not both:
        return None, False, ""
    passed = [r for r in both if raw[r]["pass"] and proj[r]["pass"]]
    rate = max(passed) if passed else min(both)
    a, b = proj[rate], raw[rate]
    ratio = a["cpu_us_per_frame"] / b["cpu_us_per_frame"]
    return ratio, bool(a["disturbed"] or b["disturbed"]), f"{rate:g}/s"


def judge(
    systems: dict[str, Any],
    knees: dict[str, list[dict[str, Any]]],
    slow: dict[str, Any] | None,
    recovery: dict[str, Any] | None,
    disturbed_pct: float,
) -> list[dict[str, Any]]:
    """Every goal of issue 9's benchmark section with its verdict."""
    out: list[dict[str, Any]] = []
    if "project-1" not in systems:
        return out
    pk = {k["repeat"]: k for k in knees.get("project-1", [])}
    if "raw" in systems:
        rk = {k["repeat"]: k for k in knees.get("raw", [])}
        pairs = [
            (
                pk[r]["knee_msgs_per_s"] / rk[r]["knee_msgs_per_s"]
                if rk[r]["knee_msgs_per_s"]
                else None,
                bool(pk[r]["disturbed"] or rk[r]["disturbed"]),
            )
            for r in sorted(rk)
            if r in pk
        ]
        out.append(
            _ratio_goal("sustained rate at the SLO >= 0.7 x raw", pairs, 0.7, True, "repeats")
        )
        cpu = [_same_rate_cpu(systems, r) for r in sorted(rk) if r in pk]
        g = _ratio_goal(
            "server CPU per delivered frame <= 1.5 x raw",
            [(c[0], c[1]) for c in cpu],
            1.5,
            False,
            "repeats",
        )
        rates = ", ".join(c[2] for c in cpu if c[2])
        g["detail"] += f"; at the same per-sender rate ({rates})"
        out.append(g)
        pc, rc = systems["project-1"].get("connect"), systems["raw"].get("connect")
        if pc and rc:
            dist = bool(pc.get("disturbed") or rc.get("disturbed"))
            complete = pc["still_open_after_hold"] == pc["requested"]
            ratio = pc["open_s"] / rc["open_s"] if rc["open_s"] else None
            g = _ratio_goal(
                f"opening {pc['requested']} authenticated sockets <= 2 x raw's time",
                [(ratio, dist)],
                2.0,
                False,
                "measurement",
            )
            if not complete:
                g["verdict"] = NOT_MET if not dist else DISTURBED
                g["detail"] += f"; only {pc['still_open_after_hold']} stayed open"
            out.append(g)
            if pc["rss_per_conn_kib"] is not None and rc["rss_per_conn_kib"]:
                out.append(
                    _ratio_goal(
                        "RSS per idle socket <= 1.5 x raw",
                        [(pc["rss_per_conn_kib"] / rc["rss_per_conn_kib"], dist)],
                        1.5,
                        False,
                        "measurement",
                    )
                )
    if "seed" in systems and knees.get("seed"):
        sk = {k["repeat"]: k for k in knees["seed"]}
        pairs = [
            (
                pk[r]["knee_msgs_per_s"] / sk[r]["knee_msgs_per_s"]
                if sk[r]["knee_msgs_per_s"]
                else None,
                bool(pk[r]["disturbed"] or sk[r]["disturbed"]),
            )
            for r in sorted(sk)
            if r in pk
        ]
        out.append(_ratio_goal("sustained rate >= 5 x seed-style", pairs, 5.0, True, "repeats"))
    for pair in (slow or {}).get("pairs", []):
        base, sl = pair["base"], pair["slow"]
        dist = bool(base["disturbed"] or sl["disturbed"])
        out.append(
            {
                "goal": "slow clients (1 in 10 never reads): the others keep the SLO",
                "measured": f"p99 {sl['p99_ms']} ms, ratio {sl['ratio']}",
                "value": sl["pass"],
                # a control that fails too says nothing about the slow clients
                "verdict": _verdict(sl["pass"], dist)
                if base["pass"] or sl["pass"]
                else "not judged (fails without slow clients too)",
                "detail": (sl["why"] or "every frame, p99 within the SLO")
                + f"; {pair['rate_per_sender']:g}/sender, {sl['slow']} slow sockets",
            }
        )
        out.append(
            {
                "goal": "slow clients: server RSS within 64 MiB of the run without",
                "measured": f"{pair['rss_growth_mib']:+.1f} MiB",
                "value": pair["rss_growth_mib"],
                "verdict": _verdict(pair["rss_growth_mib"] <= 64, dist),
                "detail": f"max RSS {base['server_rss_max_kib'] / 1024:.0f} -> "
                f"{sl['server_rss_max_kib'] / 1024:.0f} MiB; slow sockets closed 4408: "
                f"{pair['closed_4408']} of {sl['slow']} (ends: {sl['slow_closed']}); "
                f"about {pair['bytes_per_slow_socket_approx'] / 1048576:.1f} MiB sent to each",
            }
        )
    if recovery:
        complete = recovery["time_to_complete_all_s"] is not None
        ok = complete and recovery["missing"] == 0 and recovery["duplicates"] == 0
        out.append(
            {
                "goal": "recovery: every open socket has every stored message, once",
                "measured": f"missing {recovery['missing']}, duplicates {recovery['duplicates']}",
                # missing_by_back: of those, messages stored before Redis answered again
                "value": ok,
                "verdict": _verdict(ok, False),
                "detail": f"{recovery['stored']} stored, missing by Redis back "
                f"{recovery.get('missing_by_back')}, {recovery['open_at_end']}/"
                f"{recovery['sockets']} sockets open at the end, closes {recovery['closes']}, "
                f"{recovery['resumed_with_since']} resumed with since",
            }
        )
        t = recovery["time_to_complete_s"]
        out.append(
            {
                "goal": "recovery: complete within 5 s of Redis answering again",
                "measured": f"{t} s" if t is not None else f"not within {recovery['timeout_s']} s",
                "value": t,
                "verdict": _verdict(t is not None and t <= 5.0, False),
                "detail": f"Redis down {recovery['redis_down_s']} s; every stored message: "
                f"{recovery['time_to_complete_all_s']} s after it was back",
            }
        )
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
            "rep",
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
            "CPU us/frame",
            "server CPU %",
            "postgres",
            "redis",
            "loadgen",
            "other",
            "machine",
        ],
        right={0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20},
    )
    for i, s in enumerate(data["steps"], 1):
        result = "pass" if s["pass"] else f"fail: {s['why']}"
        if s.get("disturbed"):
            top = ", ".join(f"{n} {v}" for n, v in s.get("other_top", [])[:3])
            result += f" **disturbed** ({top})"
        if s.get("retry_of_disturbed"):
            result += f" (2nd try; the 1st had {fmt(s['retry_of_disturbed'])} % other load)"
        lines.append(
            row(
                [
                    i,
                    s.get("repeat", ""),
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
                    fmt(s.get("cpu_us_per_frame")),
                    *cpu_cells(s["cpu_pct"]),
                ]
            )
        )
    lines += ["", "<details><summary>commands</summary>", ""]
    lines += [f"{i}. `{s['command']}`" for i, s in enumerate(data["steps"], 1)]
    lines += ["", "</details>"]
    return lines


def _slow_section(slow: dict[str, Any] | None) -> list[str]:
    if not slow or not slow.get("pairs"):
        return []
    lines = [
        "",
        "## Slow clients",
        "",
        f"The project on one process, the same step twice: without slow clients, then with one "
        f"socket in ten (2 non-senders per room) that stops reading (its transport paused, a "
        f"4 KiB receive buffer) until the step is over, then reads what is left. Bodies carry "
        f"{slow['pad']} more characters so that backlogs grow; {slow['duration_s']:g} s measured.",
        "",
    ]
    lines += table(
        [
            "run",
            "per sender /s",
            "sent/s",
            "ratio (others)",
            "p99 ms",
            "max RSS MiB",
            "slow sockets ended",
            "other %",
            "result",
        ],
        right={1, 2, 3, 4, 5, 7},
    )
    for pair in slow["pairs"]:
        for label, s in (("without", pair["base"]), ("1 in 10 slow", pair["slow"])):
            result = "pass" if s["pass"] else f"fail: {s['why']}"
            if s.get("disturbed"):
                result += " **disturbed**"
            lines.append(
                row(
                    [
                        label,
                        f"{s['rate_per_sender']:g}",
                        fmt(s["sent_per_s"]),
                        f"{s['ratio']:.4f}",
                        fmt(s["p99_ms"]),
                        fmt(s["server_rss_max_kib"] / 1024),
                        s["slow_closed"] or "",
                        fmt(s["cpu_pct"].get("other")),
                        result,
                    ]
                )
            )
    return lines


def _recovery_section(rec: dict[str, Any] | None) -> list[str]:
    if not rec:
        return []
    lines = [
        "",
        "## Recovery: Redis SIGKILLed and started again",
        "",
        f"The project on one process against a redis-server of the bench's own; "
        f"{rec['rooms']} rooms x {rec['members']} members, {rec['senders']} senders a room at "
        f"{rec['rate_per_sender']:g}/s with a `client_id` each. Redis was SIGKILLed and started "
        f"again on the same port ({rec['redis_down_s']} s without it). A socket the server "
        "closed reconnects with `since=<highest seq without a hole>`. Checked against each "
        "room's `last_seq` in PostgreSQL.",
        "",
    ]
    lines += table(["figure", "value"], right={1})
    for label, key in (
        ("time from Redis back to every socket complete (s)", "time_to_complete_s"),
        ("... including what was sent after (s)", "time_to_complete_all_s"),
        ("messages stored", "stored"),
        ("sends skipped (socket closed at the time)", "send_skipped_while_closed"),
        ("missing (socket, seq) pairs", "missing"),
        ("... of messages stored before Redis was back", "missing_by_back"),
        ("duplicate deliveries", "duplicates"),
        ("closes 4409", "closed_4409"),
        ("reconnects", "reconnects"),
        ("resumed with since (resume.done)", "resumed_with_since"),
        ("sockets open at the end", "open_at_end"),
    ):
        lines.append(row([label, fmt(rec.get(key))]))
    lines.append(row(["closes by code", rec.get("closes") or "none"]))
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
        "best step that met the SLO, median over the undisturbed knee searches (all of them, "
        "flagged, if every one was disturbed; * marks a disturbed knee); each message is "
        "delivered to 20 sockets. CPU us / frame: the server processes' own utime + stime over "
        "a measured window divided by the chat.message frames they delivered in it (median of "
        "the passing steps).",
        "",
    ]
    lines += table(
        [
            "system",
            "sustained msgs/s in (median)",
            "per sender /s",
            "knee of each repeat",
            "vs raw",
            "vs seed",
            "CPU us / frame",
            "open sockets (s)",
            "RSS / idle conn (KiB)",
        ]
    )
    for name, h in head.items():
        note = "" if h["connect_ok"] in (True, None) else " (some refused or closed)"
        lines.append(
            row(
                [
                    LABELS.get(name, name),
                    fmt(h["sustained_msgs_per_s"])
                    + (" (disturbed)" if h.get("sustained_disturbed") else ""),
                    fmt(h["rate_per_sender"], 3),
                    " / ".join(
                        fmt(k) + ("*" if d else "")
                        for k, d in zip(
                            h.get("knees", []), h.get("knees_disturbed", []), strict=False
                        )
                    ),
                    fmt(h["vs_raw"], 2),
                    fmt(h["vs_seed"], 2),
                    fmt(h.get("cpu_us_per_frame")),
                    fmt(h["connect_s"], 2) + note,
                    fmt(h["rss_per_conn_kib"]),
                ]
            )
        )
    g = result.get("goals") or []
    if g:
        lines += [
            "",
            "## Goals (the project on one process; ratios within this run)",
            "",
            f"A step is *disturbed* when processes outside the benchmark used more than "
            f"{result['params'].get('disturbed_pct', 20):g} % of a core during it; a goal "
            "measured on disturbed steps only gets no verdict.",
            "",
        ]
        lines += table(["goal", "measured", "verdict", "how"], right={1})
        lines += [row([x["goal"], x["measured"], x["verdict"], x["detail"]]) for x in g]
    knees = result.get("knees") or {}
    if any(knees.values()):
        lines += [
            "",
            "## Knee searches",
            "",
            "Each repeat is one interleaved search (each round runs every system's next step, "
            "raw, project, raw, project, ...). Knee = input msgs/s of the best passing step.",
            "",
        ]
        lines += table(
            [
                "system",
                "repeat",
                "knee msgs/s",
                "per sender /s",
                "first fail /s",
                "p99 ms",
                "other % (pass, fail)",
                "disturbed",
            ],
            right={1, 2, 3, 4, 5},
        )
        for name, ks in knees.items():
            for k in ks:
                lines.append(
                    row(
                        [
                            name,
                            k["repeat"],
                            fmt(k["knee_msgs_per_s"]),
                            fmt(k["pass_rate"], 3),
                            fmt(k["fail_rate"], 3),
                            fmt(k["p99_ms"]),
                            " / ".join(fmt(o) for o in k["other_pct"]),
                            "yes" if k["disturbed"] else "",
                        ]
                    )
                )
    lines += _slow_section(result.get("slow"))
    lines += _recovery_section(result.get("recovery"))

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
    data["headline"] = headline(data["systems"], data.get("knees"))
    data["goals"] = judge(
        data["systems"],
        data.get("knees") or {},
        data.get("slow"),
        data.get("recovery"),
        data["params"].get("disturbed_pct", 20.0),
    )
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent / "RESULTS.md"
    write_markdown(data, out)
