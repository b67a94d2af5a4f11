"""The table and the Markdown report of ``bench/storage.py``."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

import load
from redis_transport import git_rev, machine

ROWS: list[tuple[str, str, str]] = [
    # (label, key, format)
    ("logins/s, sequential", "seq_rate", "{:.0f}"),
    ("server CPU per login, sequential (ms)", "seq_cpu", "{:.2f}"),
    ("postgres CPU per login, sequential (ms)", "seq_pg", "{:.2f}"),
    ("SQL statements per login, sequential", "seq_stmts", "{:.1f}"),
    ("logins/s, concurrent", "con_rate", "{:.0f}"),
    ("server CPU per login, concurrent (ms)", "con_cpu", "{:.2f}"),
    ("postgres CPU per login, concurrent (ms)", "con_pg", "{:.2f}"),
    ("offline: stored msg/s (all K)", "off_store_rate", "{:,.0f}"),
    ("offline: stored msg/s, first / last block of 100", "off_blocks", "{}"),
    ("offline: server CPU per stored message (µs)", "off_store_cpu", "{:,.0f}"),
    ("offline: postgres CPU per stored message (µs)", "off_store_pg", "{:,.0f}"),
    ("offline: SQL statements per stored message", "off_store_stmts", "{:.1f}"),
    ("offline: presence → all K delivered (ms)", "off_deliver_ms", "{:.0f}"),
    ("offline: server CPU for the delivery (ms)", "off_deliver_cpu", "{:.0f}"),
    ("roster user's login, 1,000 contacts (ms)", "ros_login_ms", "{:.0f}"),
    ("roster user's login: server CPU (ms)", "ros_login_cpu", "{:.0f}"),
    ("roster user's login: postgres CPU (ms) / statements", "ros_login_pgs", "{}"),
    ("roster get → result, median (ms)", "ros_get_ms", "{:.1f}"),
    ("roster get: server CPU per get (ms)", "ros_get_cpu", "{:.1f}"),
    ("roster get: postgres CPU (ms) / statements", "ros_get_pgs", "{}"),
    ("hot path: routed msg/s", "hot_rate", "{:,.0f}"),
    ("hot path: server CPU per message (µs)", "hot_cpu", "{:.1f}"),
    ("hot path: SQL statements per routed message", "hot_per_msg", "{}"),
    ("hot path: syscalls on data files per routed message (strace)", "hot_sys", "{}"),
    ("generator CPU, concurrent logins / hot path (%)", "gen", "{}"),
    ("other processes' CPU, concurrent logins / offline / hot path (% of a core)",
     "other", "{}"),
]


def derive(backend: str, r: dict[str, Any]) -> None:
    """The combined cells of :data:`ROWS`."""
    pgsql = backend == "postgresql"
    r["off_blocks"] = f"{r['off_first_rate']:,.0f} / {r['off_last_rate']:,.0f}"
    r["ros_login_pgs"] = (f"{r['ros_login_pg']:.1f} / {r['ros_login_stmts']:.0f}"
                          if pgsql else None)
    r["ros_get_pgs"] = f"{r['ros_get_pg']:.1f} / {r['ros_get_stmts']:.1f}" if pgsql else None
    r["hot_per_msg"] = (f"{r['hot_stmts'] / r['hot_messages']:.4f} "
                        f"({r['hot_stmts']:.0f} in {r['hot_messages']:,})" if pgsql else None)
    sys_ = r.get("hot_syscalls")
    if sys_ is not None:
        total = sum(sys_.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(sys_.items())) or "none"
        r["hot_sys"] = (f"{total / max(r['hot_traced_messages'], 1):.4f} ({detail} in "
                        f"{r['hot_traced_messages']:,} msgs; control login: "
                        f"{r['hot_control']})")
    r["gen"] = f"{r['con_gen']:.0f} / {r['hot_gen']:.0f}"
    r["other"] = f"{r['con_other']:.0f} / {r['off_store_other']:.0f} / {r['hot_other']:.0f}"
    if not pgsql:
        for k in ("seq_pg", "seq_stmts", "con_pg", "off_store_pg", "off_store_stmts"):
            r[k] = None


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    lines = ["| figure | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for label, key, fmt in ROWS:
        cells = []
        for name in names:
            r = results[name]
            if "error" in r:
                cells.append("error" if key == ROWS[0][1] else "")
                continue
            v = r.get(key)
            cells.append("—" if v is None else fmt.format(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(results: dict[str, dict[str, Any]]) -> list[str]:
    fs, pg = results.get("fs", {}), results.get("postgresql", {})
    out = []
    if "seq_cpu" in fs and "seq_cpu" in pg:
        for tag, what in (("seq", "sequential"), ("con", "concurrent")):
            server = pg[f"{tag}_cpu"] / fs[f"{tag}_cpu"] - 1
            total = (pg[f"{tag}_cpu"] + pg[f"{tag}_pg"]) / fs[f"{tag}_cpu"] - 1
            out.append(f"- CPU per login, {what}: vinespy on postgresql {server:+.0%} vs fs; "
                       f"vinespy + postgres {total:+.0%} (goal: at most +20%)")
    if "hot_stmts" in pg:
        out.append(f"- SQL statements during the hot path: {pg['hot_stmts']:.0f} for "
                   f"{pg['hot_messages']:,} routed messages (goal: 0)")
    return out


def statements(results: dict[str, dict[str, Any]]) -> str:
    """PostgreSQL's statements per sequential login, by statement."""
    rows = results.get("postgresql", {}).get("statements")
    if not rows:
        return ""
    lines = ["PostgreSQL statements per sequential login (pg_stat_statements, normalized):",
             "", "| per login | statement |", "|---:|---|"]
    for calls, query in rows:
        shown = query if len(query) <= 160 else query[:157] + "..."
        lines.append(f"| {calls:.2f} | `{shown.replace('|', '/')}` |")
    return "\n".join(lines) + "\n"


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, pg_version: str,
           started: str, elapsed: float, cpus: tuple[int, int]) -> str:
    errors = [f"- {name}: {r['error']}" for name, r in results.items() if "error" in r]
    argv = " ".join(sys.argv[1:])
    return f"""# Storage backends {started}

`python3 bench/storage.py{' ' + argv if argv else ''}` ({elapsed:.0f} s)

- Machine: {machine()}; Python {platform.python_version()}; uvloop \
{'yes' if load.has_uvloop() else 'no'}; {pg_version}; vinespy {git_rev()}
- vinespy (and postgres) on CPU {cpus[0]}, the generator on CPU {cpus[1]}

{table(results)}

Goals (issue 12):

{chr(10).join(goals(results)) or '- not measured'}
{chr(10).join(['', 'Errors:', '', *errors]) if errors else ''}
{statements(results)}
Sizes: {args.sequential} sequential and {args.concurrent} concurrent logins \
({args.parallel} in flight) over u0..u{args.users - 1}; {args.offline} offline messages; \
{args.contacts} contacts, {args.gets} roster gets; hot path {args.seconds:g} s, \
{args.window} messages in flight.

{METHOD}"""


METHOD = """\
Method (one run, no medians):

- One throw-away site per backend: the `bench/c2s.py` site (every built-in
  module, `rate_limit = 0`, log at warning) with `[host.storage]` `fs`, `sql` on
  `sqlite:///data/vinespy.db` (SQLite's defaults: rollback journal,
  synchronous FULL) or `sql` on a throw-away PostgreSQL (`tests/pgproc.py`:
  initdb in a temporary directory, **fsync=off**, SCRAM over TCP, default pool
  of 5 connections; `pg_stat_statements` loaded). A production PostgreSQL with
  fsync on makes every committing write slower (offline store, last activity
  at logout); reads are unaffected. Users made with
  `vinespy.accounts.create_user` on that storage, 10,000 PBKDF2 iterations;
  the 1,000-contact roster (subscription both, one group) written with
  `save_user`; contacts are not accounts.
- vinespy and every postgres process on CPU 0, the generator (`bench/load.py`'s
  clients: STARTTLS, SCRAM-SHA-1 with the client's PBKDF2 done in an untimed
  pre-pass, bind, `<presence/>`, a ping) on CPU 1. CPU from `/proc/PID/stat`
  (utime + stime; for postgres, every process plus the reaped ones), read
  after the server is idle again, so a login's disconnect is charged to it.
  `/proc` counts in 10 ms ticks: per-operation figures are totals divided
  by the count.
- Offline: one sender, one stanza per write, a ping after every block of
  100; the answer to the ping means the block is stored (a stream's stanzas
  are handled in order). Delivery: from the recipient's initial presence to
  the last of the messages received.
- Hot path: two users send each other chat messages to the bare JID,
  closed loop, one stanza per write. PostgreSQL: `pg_stat_statements` calls
  in the bench's database over the window (BEGIN and COMMIT count; updated
  as each statement ends, no lag). fs and sqlite: `strace -f -y` on the
  server for 2 s, counting the syscalls that name a file under the site's
  `data` directory; the control traces one login the same way (non-zero:
  the method sees storage access).
- Other processes' CPU: `/proc/stat` busy time minus the bench's own
  processes, over the interval. Before the logins, offline and hot path the
  bench waits up to `--quiet-wait` s for it to drop below 10% of a core, then
  runs anyway: a high figure means tests shared the machine and wall-clock
  rates (logins/s, msg/s) are low; CPU per operation moves less.
"""
