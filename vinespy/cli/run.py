"""``vinespy start|stop|restart|status``: the commands that run the server.

They check the arguments and print the outcome; :mod:`vinespy.process` does
the rest (pid files, the daemon, the worker supervisor).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..config import ClusterConfig, Config, ConfigError, load
from ..process import links
from ..process.daemon import setup_logging, start_daemon, stop_server
from ..process.pidfile import (RunPaths, acquire_pid_file, forget_workers, record_workers,
                               release_pid_file, running_pid, running_workers)
from ..process.workers import MAX_WORKERS, serve
from . import PROG, CLIError, existing_paths, one_line
from .init import private_dir

STATUS_TIMEOUT = 10.0       # s `status` waits for Redis to list the cluster's nodes

# LSB init-script exit codes for `status` (LSB core, "Init Script Actions").
STATUS_RUNNING = 0
STATUS_NOT_RUNNING = 3
STATUS_UNKNOWN = 4


def worker_count(text: str) -> int:
    """``--workers N``: an integer from 1 to MAX_WORKERS (argparse type)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to {MAX_WORKERS}, got {text!r}")
    return n


def _check_workers(config: Config, workers: int, config_path: str) -> None:
    if workers > 1 and config.cluster is None:
        raise CLIError(f"--workers {workers} needs a [cluster] table in {config_path}: "
                       "workers are cluster nodes sharing the ports through Redis")


def cmd_start(args: argparse.Namespace) -> int:
    """``vinespy start [-d] [--workers N]``: serve until SIGTERM/SIGINT."""
    paths = existing_paths(args)
    config = load(args.config)
    workers = getattr(args, "workers", None) or 1
    _check_workers(config, workers, args.config)
    pid = running_pid(paths.pid_file, clean=True)
    if pid is not None:
        raise CLIError(f"already running (pid {pid})")
    for d in (paths.pid_file.parent, paths.log_file.parent):
        try:
            private_dir(d)
        except OSError as exc:
            raise CLIError(f"cannot create {d}: {exc.strerror}") from None
    if args.daemonize:
        pid = start_daemon(config, paths, workers)
        what = f"pid {pid}, {workers} workers" if workers > 1 else f"pid {pid}"
        print(f"{PROG} started ({what}); logging to {paths.log_file}")
        return 0
    setup_logging(config.log, None)
    acquire_pid_file(paths.pid_file)
    try:
        record_workers(paths, workers)
        return serve(config, None, workers)
    except OSError as exc:              # most often: the port is taken
        raise CLIError(f"cannot start: {exc}") from None
    finally:
        forget_workers(paths.workers_file)
        release_pid_file(paths.pid_file)


def cmd_stop(args: argparse.Namespace) -> int:
    """``vinespy stop``: SIGTERM the server and wait for it to exit."""
    paths = existing_paths(args)
    if not _stop(paths):
        raise CLIError("not running")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    """``vinespy restart``: stop if running, then ``start -d``.

    The config is checked first: a typo in it leaves the running server alone.
    """
    paths = existing_paths(args)
    config = load(args.config)
    if args.workers is None:
        args.workers = running_workers(paths)
    _check_workers(config, args.workers, args.config)
    _stop(paths)
    args.daemonize = True
    return cmd_start(args)


def cmd_status(args: argparse.Namespace) -> int:
    """``vinespy status``: LSB exit status 0 running, 3 not running."""
    try:
        paths = existing_paths(args)
    except CLIError as exc:
        exc.status = STATUS_UNKNOWN
        raise
    pid = running_pid(paths.pid_file)
    if pid is None:
        print(f"{PROG} is not running")
        status = STATUS_NOT_RUNNING
    else:
        print(f"{PROG} is running (pid {pid})")
        status = STATUS_RUNNING
    try:
        config = load(args.config, check_certs=False)
    except ConfigError as exc:          # the local answer stands; the rest needs the config
        print(f"{PROG}: {one_line(str(exc))}", file=sys.stderr)
        return status
    if config.cluster is not None:
        print_cluster(config.cluster)
    for line in links.lines(links.read_all(config.path)):
        print(line)
    return status


def print_cluster(cfg: ClusterConfig) -> None:
    """One line for the cluster, then one per node registered in Redis; one
    line ``cluster: cannot reach URL: REASON`` if Redis does not answer.
    The URL is printed without its password."""
    from ..cluster import status        # imports redis: only with a [cluster] table
    from redis.exceptions import RedisError
    url = status.where(cfg)
    try:
        nodes = asyncio.run(asyncio.wait_for(status.nodes(cfg), STATUS_TIMEOUT))
        now = asyncio.run(asyncio.wait_for(status.primary(cfg), STATUS_TIMEOUT))
    except asyncio.TimeoutError:
        print(f"cluster: cannot reach {url}: no answer within {STATUS_TIMEOUT:g} s")
        return
    except (RedisError, OSError, ValueError) as exc:
        reason = one_line(str(exc)) or type(exc).__name__
        print(f"cluster: cannot reach {url}: {status.hide_passwords(reason, cfg)}")
        return
    alive = sum(n.alive for n in nodes)
    on = f", primary {now}" if now is not None else ""
    print(f"cluster {url}{on}: {len(nodes)} node{'' if len(nodes) == 1 else 's'}, "
          f"{alive} alive")
    for node in nodes:
        print(node.line())


def _stop(paths: RunPaths) -> bool:
    """Stop the server ``paths`` names and say so; False if none runs."""
    pid = stop_server(paths)
    if pid is None:
        return False
    print(f"{PROG} stopped (pid {pid})")
    return True
