"""What vinespy.s2s.peercert costs against the standard ssl module's context.

Not part of the test suite. This process is the server: STARTTLS-style
(a plain "proceed" line, then ``loop.start_tls(..., server_side=True)``),
on uvloop and on the standard loop, with three contexts:

  stdlib:          vinespy.tls.server_context, no client certificate asked
                   (what an incoming s2s stream uses today)
  stdlib-optional: the same with CERT_OPTIONAL and the CA loaded: asks for
                   and verifies the certificate, but aborts on an untrusted one
  peercert:        peercert.server_context (pyOpenSSL), asks and never aborts

A client subprocess (blocking ssl sockets, a client certificate from the
same throw-away CA) runs each phase when told on stdin; the server's CPU
time (user + system, this process only) is measured around the phase:

  handshake: N connections: STARTTLS, TLS 1.3 handshake, 1 byte each way, close
  upload:    one connection carrying 10 MB client -> server
  download:  one connection carrying 10 MB server -> client

    python3 bench/peercert.py --handshakes 300 --mb 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

PROCEED = b"proceed\n"
CHUNK = 65536


# -- the client subprocess ---------------------------------------------------

def client(port: int, certdir: Path) -> None:
    ctx = ssl.create_default_context(cafile=str(certdir / "ca.pem"))
    ctx.load_cert_chain(certdir / "peer.crt", certdir / "peer.key")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    for line in sys.stdin:
        phase, count = line.split()
        for _ in range(int(count) if phase == "handshake" else 1):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                assert raw.recv(len(PROCEED), socket.MSG_WAITALL) == PROCEED
                with ctx.wrap_socket(raw, server_hostname="server.test") as s:
                    s.sendall(phase[0].encode())
                    if phase == "upload":
                        block = b"u" * CHUNK
                        for _ in range(int(count) // CHUNK):
                            s.sendall(block)
                    got = 0
                    while chunk := s.recv(CHUNK):
                        got += len(chunk)
                    assert got == (int(count) if phase == "download" else 1), (phase, got)
        print("done", flush=True)


# -- the server --------------------------------------------------------------

async def serve_one(ctx: ssl.SSLContext, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, size: int) -> None:
    writer.write(PROCEED)
    await writer.start_tls(ctx)
    phase = await reader.readexactly(1)
    if phase == b"u":
        await reader.readexactly(size)
        writer.write(b"k")
    elif phase == b"d":
        block = b"d" * CHUNK
        for _ in range(size // CHUNK):
            writer.write(block)
            await writer.drain()
    else:
        writer.write(b"k")
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass


async def measure(ctx: ssl.SSLContext, certdir: Path, handshakes: int, size: int
                  ) -> dict[str, float]:
    server = await asyncio.start_server(
        lambda r, w: serve_one(ctx, r, w, size), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "client", str(port), str(certdir),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin and proc.stdout
    out = {}
    for phase, count in (("handshake", 20), ("handshake", handshakes),
                         ("upload", size), ("download", size)):
        cpu = time.process_time()
        proc.stdin.write(f"{phase} {count}\n".encode())
        assert await proc.stdout.readline() == b"done\n"
        out[phase] = time.process_time() - cpu       # the 20 warm-up ones are overwritten
    proc.stdin.close()
    await proc.wait()
    server.close()
    await server.wait_closed()
    return out


def contexts(certdir: Path) -> dict[str, Callable[[], ssl.SSLContext]]:
    from vinespy import tls
    from vinespy.s2s import peercert
    crt, key, ca = certdir / "server.crt", certdir / "server.key", certdir / "ca.pem"

    def optional() -> ssl.SSLContext:
        ctx = tls.server_context(crt, key)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(ca)
        return ctx

    return {"stdlib": lambda: tls.server_context(crt, key), "stdlib-optional": optional,
            "peercert": lambda: peercert.server_context(crt, key, ca)}


def main() -> None:
    if sys.argv[1:2] == ["client"]:
        client(int(sys.argv[2]), Path(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handshakes", type=int, default=300)
    ap.add_argument("--mb", type=int, default=10)
    args = ap.parse_args()
    import trustme
    import uvloop
    with tempfile.TemporaryDirectory() as tmp:
        certdir = Path(tmp)
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(certdir / "ca.pem"))
        for name, leaf in (("server", ca.issue_cert("server.test")),
                           ("peer", ca.issue_cert("peer.test"))):
            leaf.private_key_pem.write_to_path(str(certdir / f"{name}.key"))
            (certdir / f"{name}.crt").write_bytes(
                b"".join(p.bytes() for p in leaf.cert_chain_pems))
        loops: dict[str, Any] = {"uvloop": uvloop.new_event_loop,
                                 "asyncio": asyncio.new_event_loop}
        print(f"server CPU (user+sys), {args.handshakes} TLS 1.3 handshakes with a client "
              f"certificate (ECDSA P-256), {args.mb} MB each way; pid {os.getpid()}")
        print(f"{'loop':8} {'context':16} {'µs/handshake':>13} {'ms/10MB up':>11} "
              f"{'ms/10MB down':>13}")
        for loop_name, factory in loops.items():
            for ctx_name, make in contexts(certdir).items():
                with asyncio.Runner(loop_factory=factory) as runner:
                    r = runner.run(measure(make(), certdir, args.handshakes, args.mb << 20))
                scale = 10 / args.mb * 1e3
                print(f"{loop_name:8} {ctx_name:16} {r['handshake'] / args.handshakes * 1e6:13.0f} "
                      f"{r['upload'] * scale:11.1f} {r['download'] * scale:13.1f}", flush=True)


if __name__ == "__main__":
    main()
