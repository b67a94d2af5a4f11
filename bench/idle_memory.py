"""What an idle STARTTLS session costs vinespy in memory, and what that is made of.

    python3 bench/idle_memory.py [--levels 2000,10000] [--sample 1000]
                                 [--heaptrack] [--server-env NAME=VALUE ...]

Not part of the test suite. The server is ``bench/targets.py``'s
:class:`Vinespy` (the bench's config: STARTTLS required, fs storage, the chat
modules), pinned to CPU 0; the sessions are ``bench/load.py``'s: TCP,
STARTTLS, SCRAM-SHA-1, bind, initial presence, spread over ``u200``..``u399``
(``load.idle_specs``), 100 logins in flight. Three passes, each on a fresh
server:

1. **rss** -- the figure of issue 17: after ``load.learn_salts`` (the baseline
   is taken then, as ``load.scenario_idle`` does), log in each level of
   sessions in turn and, 2 s after the last login, read the server's VmRSS,
   ``/proc/PID/smaps`` (anonymous memory split into the brk heap, mappings of
   the size of uvloop's 256 KiB TLS read buffer -- glibc mmaps those while its
   mmap threshold is below 256 KiB, and only the pages written count -- and
   the rest: pymalloc arenas, other malloc arenas), glibc ``mallinfo2()``
   (bytes in use in malloc, free in its heaps, mmapped) and pymalloc's arena
   statistics (``sys._debugmallocstats``). Every figure is given as KiB per
   session: (value at the level - value at the baseline) / level. Then
   ``gc.collect()`` and ``malloc_trim(0)`` are run in the server and RSS read
   again: what they give back is garbage or free heap, not what a session
   needs.
2. **python** -- the Python side of one session: ``tracemalloc`` (25 frames)
   runs in the server from its start; snapshots are taken before and after
   ``--sample`` more logins, and the difference, divided by the sample, is
   grouped by component (the innermost frame of vinespy or of the standard
   library that allocated it: the parser, the StreamReader/StreamWriter, the
   TLS transport, the session...) and by line. A census of live objects by
   type (``gc.get_objects()`` plus the untracked objects they refer to:
   bytes, str, ints; sizes by ``sys.getsizeof``) is diffed the same way.
   tracemalloc sees what goes through ``PyMem_*``/``PyObject_*`` (Python
   objects, lxml's proxies and uvloop's ``PyMem_RawMalloc`` read buffer, at
   its allocated size), not libxml2's or OpenSSL's ``malloc``.
3. **heaptrack** (``--heaptrack``; Debian's heaptrack) -- the C side: the
   server runs under heaptrack, which records every ``malloc``; after
   the baseline plus ``--sample`` logins it is told to ``_exit``, so that every
   live allocation is reported as "leaked". Run twice (the sample, and twice
   the sample), the difference per call stack, divided by the sample, is one
   session's malloc'd bytes, grouped by library: OpenSSL (the SSL object,
   its record buffers, the memory BIOs), libxml2 (the push parser context,
   its input buffer, dict and node stack; the stream's tree), uvloop, and
   Python's own (large objects; small ones live in pymalloc arenas, which
   are mmapped and not seen here: pass 2 has them).

Inside the server, a small wrapper (``idle_memory.py serve``, used as the
server command) registers two signals before the server runs: SIGUSR1 writes
the figures asked for in ``<dump>.req`` to ``<dump>.<id>.json``
(``IDLE_MEMORY_DUMP`` names ``<dump>``), SIGUSR2 ends the process with
``os._exit`` (heaptrack then sees every live allocation);
``IDLE_MEMORY_TRACEMALLOC=frames`` starts tracemalloc as the server starts
serving. Nothing of it is in
vinespy itself.

``--server-env`` passes environment variables to the server (e.g.
``MALLOC_ARENA_MAX=2``, ``VINESPY_LOOP=asyncio``) for experiments.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import load  # noqa: E402
import targets  # noqa: E402

PASSWORD = "bench-password"
USERS = 400
SETTLE = 2.0                 # s after the last login of a level before reading
DUMP_TIMEOUT = 120.0         # s for the server to write what it was asked (a census is slow)
TRACE_FRAMES = 25
# uvloop's SSLProtocol read buffer, 256 KiB (uvloop/includes/consts.pxi
# SSL_READ_MAX_SIZE); mmapped by glibc it is a mapping of 256 KiB + one page.
UV_SSL_BUFFER = 256 * 1024


# ============================================================ in the server ==

def _mallinfo2() -> dict[str, int]:
    """glibc's mallinfo2(): every arena; {} elsewhere."""
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = MallInfo2
    mi = fn()
    # arena: bytes obtained with brk/mmap for the heaps; uordblks: in use;
    # fordblks: free in the heaps; hblkhd: in chunks mmapped one each.
    return {"heap_total": mi.arena, "heap_used": mi.uordblks, "heap_free": mi.fordblks,
            "mmapped": mi.hblkhd, "mmapped_count": mi.hblks}


def _pymalloc() -> dict[str, int]:
    """pymalloc's arenas and blocks, from sys._debugmallocstats (C stderr)."""
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    out: dict[str, int] = {}
    for key, pattern in (("arenas", r"# arenas allocated current\s*=\s*([\d,]+)"),
                         ("arena_bytes", r"(\d[\d,]*) arenas \* \d+ bytes/arena\s*=\s*([\d,]+)"),
                         ("blocks_used", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
                         ("blocks_free", r"# bytes in available blocks\s*=\s*([\d,]+)"),
                         ("pools_free", r"bytes in \d+ unused pools\s*=\s*([\d,]+)")):
        m = re.search(pattern, text)
        if m:
            out[key] = int(m.groups()[-1].replace(",", ""))
    return out


def smaps(pid: int | str = "self") -> dict[str, int]:
    """Resident KiB by kind of mapping: the brk heap, 256 KiB anonymous
    mappings (uvloop's TLS read buffers), other anonymous, files; and the
    count of those 256 KiB mappings."""
    out = {"rss": 0, "heap": 0, "uv_buffers": 0, "uv_buffer_maps": 0, "anon_other": 0,
           "file": 0, "stack": 0}
    size = 0
    kind = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
            addr, _, rest = line.partition(" ")
            lo, hi = (int(x, 16) for x in addr.split("-"))
            parts = rest.split()
            name = parts[4] if len(parts) > 4 else ""
            size = hi - lo
            if name == "[heap]":
                kind = "heap"
            elif name.startswith("[stack"):
                kind = "stack"
            elif name.startswith("/"):
                kind = "file"
            elif UV_SSL_BUFFER < size <= UV_SSL_BUFFER + 4096:
                kind = "uv_buffers"
                out["uv_buffer_maps"] += 1
            else:
                kind = "anon_other"
        elif line.startswith("Rss:"):
            kb = int(line.split()[1])
            out["rss"] += kb
            out[kind] += kb
    return out


def _census() -> dict[str, list[int]]:
    """Live objects by type: count and sys.getsizeof bytes. gc-tracked
    objects, plus the untracked ones (bytes, str, ints...) they refer to."""
    seen: set[int] = set()
    out: dict[str, list[int]] = {}

    def add(o: object) -> None:
        i = id(o)
        if i in seen:
            return
        seen.add(i)
        t = type(o)
        name = f"{t.__module__}.{t.__qualname__}"
        slot = out.get(name)
        if slot is None:
            slot = out[name] = [0, 0]
        slot[0] += 1
        try:
            slot[1] += sys.getsizeof(o)
        except TypeError:
            pass
    objs = gc.get_objects()
    mine = {id(seen), id(out)}
    for o in objs:
        if id(o) not in mine:
            add(o)
    for o in objs:
        if id(o) in mine:
            continue
        for r in gc.get_referents(o):
            if not gc.is_tracked(r):
                add(r)
    del objs
    return out


def _dump(base: str) -> None:
    """SIGUSR1: do what <base>.req asks, write <base>.<id>.json."""
    import tracemalloc
    req = json.loads(Path(base + ".req").read_text())
    out: dict[str, Any] = {"id": req["id"]}
    if req.get("gc"):
        out["gc_collected"] = gc.collect()
    if req.get("trim"):
        out["trimmed"] = ctypes.CDLL("libc.so.6").malloc_trim(0)
    out["smaps"] = smaps()
    out["mallinfo"] = _mallinfo2()
    out["pymalloc"] = _pymalloc()
    out["gc_counts"] = gc.get_count()
    if tracemalloc.is_tracing():
        out["traced"] = tracemalloc.get_traced_memory()[0]
        if req.get("snapshot"):
            tracemalloc.take_snapshot().dump(f"{base}.{req['id']}.snap")
    if req.get("census"):
        out["census"] = _census()
    tmp = Path(f"{base}.{req['id']}.tmp")
    tmp.write_text(json.dumps(out))
    tmp.rename(f"{base}.{req['id']}.json")


def serve(argv: list[str]) -> int:
    """The server command: vinespy's CLI with the signals above registered."""
    frames = int(os.environ.get("IDLE_MEMORY_TRACEMALLOC", "0") or 0)
    from vinespy import server as server_mod
    from vinespy.cli import main
    base = os.environ["IDLE_MEMORY_DUMP"]
    orig = server_mod.Server.serve

    async def serve_with_signals(self: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, _dump, base)
        loop.add_signal_handler(signal.SIGUSR2, os._exit, 0)
        if frames:
            # From here: tracing the imports and the config makes the start
            # slower than the bench waits for.
            import tracemalloc
            tracemalloc.start(frames)
        return await orig(self, *args, **kwargs)

    server_mod.Server.serve = serve_with_signals    # type: ignore[method-assign]
    return main(argv)


# ========================================================== the generator ==

class Measured(targets.Vinespy):
    """The bench's vinespy, run through :func:`serve` (optionally under heaptrack)."""

    def __init__(self, workdir: Path, cert: Path, key: Path, *, extra_env: dict[str, str],
                 tracemalloc_frames: int = 0, heaptrack: Path | None = None) -> None:
        super().__init__(workdir, cert, key)
        self.extra_env = extra_env
        self.frames = tracemalloc_frames
        self.heaptrack = heaptrack
        self.dump = str(self.workdir / "dump")
        self._req = 0

    def command(self) -> list[str]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "serve",
               "start", "-c", str(self.config)]
        if self.heaptrack is not None:
            # Without address randomisation, the frames heaptrack cannot name
            # (static functions of libssl, libxml2) are the same addresses in
            # both runs, so their stacks can be subtracted.
            cmd = ["setarch", os.uname().machine, "-R",
                   "heaptrack", "-o", str(self.heaptrack), *cmd]
        return cmd

    def env(self) -> dict[str, str]:
        env = {**super().env(), **self.extra_env, "IDLE_MEMORY_DUMP": self.dump}
        if self.frames:
            env["IDLE_MEMORY_TRACEMALLOC"] = str(self.frames)
        return env

    def _find_pid(self, root: int) -> int:
        # Under heaptrack the server is a descendant of heaptrack's shell.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            todo = [root]
            while todo:
                p = todo.pop(0)
                cmd = targets._cmdline(p)
                if (cmd and Path(cmd[0]).name.startswith("python")
                        and any(a.endswith("idle_memory.py") for a in cmd) and "serve" in cmd):
                    return p
                todo += targets._children(p)
            time.sleep(0.1)
        raise RuntimeError("the server process was not found")

    def ask(self, **what: bool) -> dict[str, Any]:
        """Have the server write its figures (and whatever ``what`` asks for)."""
        self._req += 1
        Path(self.dump + ".req").write_text(json.dumps({"id": self._req, **what}))
        out = Path(f"{self.dump}.{self._req}.json")
        os.kill(self.pid(), signal.SIGUSR1)
        deadline = time.monotonic() + DUMP_TIMEOUT
        while not out.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not write its figures")
            time.sleep(0.05)
        res: dict[str, Any] = json.loads(out.read_text())
        res["vmrss"] = load.proc_rss_kb(self.pid())
        return res

    def snapshot_path(self, rid: int) -> Path:
        return Path(f"{self.dump}.{rid}.snap")


def _start(workdir: Path, name: str, args: argparse.Namespace, **kw: Any) -> Measured:
    cert, key = targets.make_cert(workdir / "cert")
    t = Measured(workdir / name, cert, key, extra_env=dict(args.server_env), **kw)
    t.prepare(USERS, PASSWORD)
    t.start(0)
    return t


async def _connect(t: Measured, count: int, start: int = 0) -> list[load.Conn]:
    return await load.login_many(t.port, load.client_context(),
                                 load.idle_specs(count, start), PASSWORD, 100, retries=2)


async def _baseline(t: Measured) -> dict[str, Any]:
    env = load.Env(port=t.port, pid=t.pid(), password=PASSWORD)
    await load.learn_salts(env, [u for u, _ in load.idle_specs(200)])
    await asyncio.sleep(SETTLE)
    await load.quiesce(t.pid())
    return t.ask()


def _flat(d: dict[str, Any]) -> dict[str, float]:
    """The numeric figures of a dump, KiB, flattened: 'smaps.heap'..."""
    out: dict[str, float] = {"VmRSS": d["vmrss"]}
    for k, v in d["smaps"].items():
        out[f"smaps.{k}"] = v
    for k, v in d["mallinfo"].items():
        out[f"malloc.{k}"] = v if k.endswith("count") else v / 1024
    for k, v in d["pymalloc"].items():
        out[f"pymalloc.{k}"] = v if k == "arenas" else v / 1024
    if "traced" in d:
        out["tracemalloc"] = d["traced"] / 1024
    return out


def _per_session(base: dict[str, Any], now: dict[str, Any], n: int) -> dict[str, float]:
    b, a = _flat(base), _flat(now)
    return {k: (a[k] - b.get(k, 0.0)) / n for k in a}


def pass_rss(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    t = _start(workdir, "rss", args)
    try:
        return asyncio.run(_rss(t, args))
    finally:
        t.stop()


async def _rss(t: Measured, args: argparse.Namespace) -> dict[str, Any]:
    conns: list[load.Conn] = []
    out: dict[str, Any] = {"levels": {}}
    try:
        base = await _baseline(t)
        out["base"] = _flat(base)
        done = 0
        for level in args.levels:
            conns += await _connect(t, level, done)
            done = level
            await asyncio.sleep(SETTLE)
            out["levels"][level] = _per_session(base, t.ask(), level)
        n = args.levels[-1]
        out["after_gc"] = _per_session(base, t.ask(gc=True), n)
        out["after_trim"] = _per_session(base, t.ask(trim=True), n)
    finally:
        load.close_all(conns)
    return out


_COMPONENTS = (
    # (path fragment of the innermost matching frame, component)
    ("vinespy/stream/parser.py", "parser (lxml, Python side)"),
    ("vinespy/stream/base.py", "XMLStream (base.py)"),
    ("vinespy/stream/client.py", "C2S stream (client.py)"),
    ("vinespy/stream/negotiation", "negotiation"),
    ("vinespy/stream/sasl.py", "SASL"),
    ("vinespy/stream/session.py", "ClientSession (session.py)"),
    ("vinespy/sessions.py", "session table (sessions.py)"),
    ("vinespy/modules/", "modules"),
    ("vinespy/", "vinespy, other"),
    ("asyncio/sslproto.py", "TLS transport (asyncio.sslproto)"),
    ("/ssl.py", "ssl module"),
    ("asyncio/streams.py", "StreamReader/StreamWriter/protocol"),
    ("asyncio/", "asyncio, other"),
    ("uvloop/", "uvloop"),
    ("lxml", "lxml"),
)


def _component(tb: Any) -> tuple[str, str]:
    frames = list(tb)
    for fr in reversed(frames):                    # innermost first
        for frag, name in _COMPONENTS:
            if frag in fr.filename:
                return name, f"{fr.filename.split('site-packages/')[-1]}:{fr.lineno}"
    if not frames:
        return "no Python frame (uvloop's C code)", "?"
    fr = frames[-1]
    return "other", f"{fr.filename}:{fr.lineno}"


def pass_python(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    t = _start(workdir, "python", args, tracemalloc_frames=TRACE_FRAMES)
    try:
        return asyncio.run(_python(t, args))
    finally:
        t.stop()


async def _python(t: Measured, args: argparse.Namespace) -> dict[str, Any]:
    import tracemalloc
    n = args.sample
    conns: list[load.Conn] = []
    try:
        await _baseline(t)
        conns += await _connect(t, 200)          # warm: caches, first-use allocations
        await asyncio.sleep(SETTLE)
        before = t.ask(gc=True, snapshot=True, census=True)
        conns += await _connect(t, 200 + n, 200)
        await asyncio.sleep(SETTLE)
        after = t.ask(gc=True, snapshot=True, census=True)
        s0 = tracemalloc.Snapshot.load(str(t.snapshot_path(before["id"])))
        s1 = tracemalloc.Snapshot.load(str(t.snapshot_path(after["id"])))
    finally:
        load.close_all(conns)
    comp: dict[str, float] = collections.defaultdict(float)
    lines: dict[tuple[str, str], float] = collections.defaultdict(float)
    counts: dict[tuple[str, str], int] = collections.defaultdict(int)
    for sign, snap in ((-1, s0), (1, s1)):
        for tr in snap.traces:
            c, where = _component(tr.traceback)
            comp[c] += sign * tr.size
            lines[(c, where)] += sign * tr.size
            counts[(c, where)] += sign
    census: dict[str, tuple[float, float]] = {}
    c0, c1 = before["census"], after["census"]
    for name in set(c0) | set(c1):
        a0, a1 = c0.get(name, [0, 0]), c1.get(name, [0, 0])
        census[name] = ((a1[0] - a0[0]) / n, (a1[1] - a0[1]) / n / 1024)
    return {
        "n": n,
        "per_session": _per_session(before, after, n),
        "components": {k: v / n / 1024 for k, v in comp.items()},
        "lines": {f"{c} | {w}": (v / n / 1024, counts[(c, w)] / n)
                  for (c, w), v in lines.items()},
        "census": census,
    }


_LIBS = (
    # (frame substring, library), tried on the frames from the allocation outwards
    ("uvloop", "uvloop (Cython)"),
    ("libssl", "OpenSSL libssl"),
    ("libcrypto", "OpenSSL libcrypto"),
    ("_ssl", "CPython _ssl"),
    ("libxml2", "libxml2"),
    ("etree", "lxml"),
    ("PyMem_Raw", "Python (PyMem_RawMalloc)"),
    ("_PyObject_Malloc", "Python (large objects)"),
    ("PyObject_Malloc", "Python (large objects)"),
    ("PyMem_Malloc", "Python (PyMem_Malloc)"),
    ("python", "Python"),
)


def _stacks(path: Path) -> dict[str, float]:
    """heaptrack_print's leaked bytes per collapsed stack."""
    stacks = path.with_suffix(".stacks")
    subprocess.run(["heaptrack_print", "-f", str(path), "--flamegraph-cost-type", "leaked",
                    "-F", str(stacks)], check=True, stdout=subprocess.DEVNULL)
    out: dict[str, float] = collections.defaultdict(float)
    for line in stacks.read_text(errors="replace").splitlines():
        stack, _, cost = line.rpartition(" ")
        if stack and cost.isdigit():
            out[stack] += int(cost)
    return out


def _library(stack: str) -> str:
    frames = stack.split(";")[::-1]              # the allocation first
    for fr in frames:
        low = fr.lower()
        if low.startswith(("malloc", "calloc", "realloc", "operator new", "??")):
            continue
        if any(s in low for s in ("xml", "htmlparse")):
            return "libxml2"
        if low.startswith(("ssl", "tls", "ossl", "ssl3", "dtls", "statem")):
            return "OpenSSL libssl"
        if low.startswith(("crypto", "bio", "evp", "buf_mem", "ec_", "bn_", "rsa", "x509",
                           "asn1", "hmac", "ossl_", "openssl")):
            return "OpenSSL libcrypto"
        for sub, lib in _LIBS:
            if sub.lower() in low:
                return lib
    return "other: " + (frames[0] if frames else "?")


async def _heaptrack(t: Measured, n: int) -> None:
    conns: list[load.Conn] = []
    try:
        await _baseline(t)
        conns += await _connect(t, n)
        await asyncio.sleep(SETTLE)
        os.kill(t.pid(), signal.SIGUSR2)            # _exit: all that lives is "leaked"
        assert t.proc is not None
        t.proc.wait(300)                            # heaptrack interprets its data
    finally:
        load.close_all(conns)


def pass_heaptrack(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[int, dict[str, float]] = {}
    for n in (args.sample, 2 * args.sample):
        data = workdir / f"heaptrack-{n}"
        t = _start(workdir, f"heaptrack{n}", args, heaptrack=data)
        try:
            asyncio.run(_heaptrack(t, n))
        finally:
            t.stop()
        files = sorted(workdir.glob(f"heaptrack-{n}*.zst")) + sorted(
            workdir.glob(f"heaptrack-{n}*.gz"))
        if not files:
            raise RuntimeError(f"no heaptrack data for {n}")
        runs[n] = _stacks(files[0])
    lo, hi = runs[args.sample], runs[2 * args.sample]
    libs: dict[str, float] = collections.defaultdict(float)
    sites: dict[str, float] = collections.defaultdict(float)
    for stack in set(lo) | set(hi):
        d = (hi.get(stack, 0.0) - lo.get(stack, 0.0)) / args.sample / 1024
        lib = _library(stack)
        libs[lib] += d
        frames = [f for f in stack.split(";")
                  if not f.lower().startswith(("malloc", "calloc", "realloc", "??"))]
        sites[f"{lib} | {' <- '.join(frames[::-1][:4])}"] += d
    return {"n": args.sample, "libraries": dict(libs), "sites": dict(sites)}


# ================================================================ report ==

def _table(rows: dict[str, float], title: str, limit: int = 0, unit: str = "KiB") -> str:
    items = sorted(rows.items(), key=lambda kv: -abs(kv[1]))
    if limit:
        items = items[:limit]
    width = max([len(k) for k, _ in items] + [10])
    lines = [f"{title}", "-" * len(title)]
    lines += [f"  {k:<{width}}  {v:9.2f} {unit}" for k, v in items]
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    out: list[str] = []
    rss = results.get("rss")
    if rss:
        keys = list(next(iter(rss["levels"].values())))
        head = f"  {'KiB per session':<24}" + "".join(f"{lvl:>10,}" for lvl in rss["levels"])
        head += f"{'+gc':>10}{'+trim':>10}"
        out += ["RSS per idle STARTTLS session (delta from the baseline / sessions)", head]
        for k in keys:
            vals = [rss["levels"][lvl][k] for lvl in rss["levels"]]
            vals += [rss["after_gc"][k], rss["after_trim"][k]]
            out.append(f"  {k:<24}" + "".join(f"{v:10.2f}" for v in vals))
        out.append(f"  (baseline VmRSS {rss['base']['VmRSS']:,.0f} KiB)")
        out.append("")
    py = results.get("python")
    if py:
        n = py["n"]
        out.append(_table(py["components"], f"Python allocations (tracemalloc) per session, "
                          f"by component ({n} sessions)"))
        out.append(f"  total {sum(py['components'].values()):.2f} KiB")
        out.append("")
        lines = {k: v[0] for k, v in py["lines"].items()}
        out.append(_table(lines, "... by line (innermost vinespy/stdlib frame)", 30))
        out.append("")
        census = {f"{k} ({c:+.2f}/session)": b for k, (c, b) in py["census"].items()
                  if abs(b) > 0.005 or abs(c) > 0.01}
        out.append(_table(census, "Live objects by type (census, sys.getsizeof)", 30))
        out.append("")
        ps = py["per_session"]
        out.append("  same sample: " + ", ".join(
            f"{k} {ps[k]:.2f}" for k in ("VmRSS", "smaps.uv_buffers", "malloc.heap_used",
                                         "pymalloc.blocks_used", "tracemalloc") if k in ps))
        out.append("")
    ht = results.get("heaptrack")
    if ht:
        out.append(_table(ht["libraries"], f"malloc'd and live per session (heaptrack, "
                          f"{ht['n']} vs {2 * ht['n']} sessions), by library"))
        out.append(f"  total {sum(ht['libraries'].values()):.2f} KiB")
        out.append("")
        out.append(_table(ht["sites"], "... by call site", 30))
        out.append("")
    return "\n".join(out)


def run(args: argparse.Namespace) -> dict[str, Any]:
    load.setup()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="idle-memory-") as tmp:
        workdir = Path(tmp)
        if "rss" in args.passes:
            print("pass rss", flush=True)
            results["rss"] = pass_rss(workdir, args)
        if "python" in args.passes:
            print("pass python", flush=True)
            results["python"] = pass_python(workdir, args)
        if "heaptrack" in args.passes:
            print("pass heaptrack", flush=True)
            results["heaptrack"] = pass_heaptrack(workdir, args)
    return results


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        return serve(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="2000,10000",
                    type=lambda s: [int(x) for x in s.split(",")],
                    help="session counts of the rss pass (default 2000,10000)")
    ap.add_argument("--sample", type=int, default=1000,
                    help="sessions whose difference makes 'one session' (default 1000)")
    ap.add_argument("--passes", default="rss,python",
                    help="rss, python, heaptrack (default rss,python)")
    ap.add_argument("--heaptrack", action="store_true", help="add the heaptrack pass")
    ap.add_argument("--server-env", action="append", default=[],
                    type=lambda s: tuple(s.split("=", 1)), help="NAME=VALUE for the server")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    args.passes = set(args.passes.split(",")) | ({"heaptrack"} if args.heaptrack else set())
    results = run(args)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
