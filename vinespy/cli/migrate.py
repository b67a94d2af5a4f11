"""``vinespy migrate --to URL [--host DOMAIN]``: copy every host's storage
into another backend, then check the copy (issue 12 item 4).

URL names the target: ``sqlite:///PATH``, ``postgresql://USER@HOST:PORT/DB``
(the password in the URL or, better, ``--password-file``), ``fs:///PATH`` or
a plain directory; a relative PATH starts at the site directory, as the
config's ``[host.storage]`` paths do. The sources are the configured storage
of each ``[[host]]`` (or of the one serving ``--host DOMAIN``) with its
pubsub services' nodes; they are only read. The nodes go where a
standalone server on the target keeps them (:func:`pubsub_target`): the
target database's tables for a sql target (through the target's own
SqlStorage), ``pubsub`` in the target directory for fs, times kept.
``--skip-pubsub`` copies none, for nodes that should stay where they are
(a cluster's fs hosts keep them in Redis, where servers on an fs target
find them still). The copy is idempotent (:mod:`vinespy.storage.migrate`):
after an interruption, run it again.

It prints a line per kind with its count (users, roster items, vcards,
private, keyval stores by name, pubsub nodes, pubsub items), reads
everything back from the target and compares it with the source, and exits
1 with one line if they differ (pubsub creation and publication times
included). A running server would change the source
while it is copied: the command refuses to run while the pid file names a
live server, unless ``--force``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Config, HostConfig, StorageConfig, load, safe_url
from ..jid import JIDError, prep_domain
from ..process.pidfile import running_pid
from ..storage import Storage, open_storage
from ..storage import migrate as m
from ..storage.pubsub import PubSubStore, store_for
from . import PROG, CLIError, Parser, existing_paths


def add_parser(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = sub.add_parser(
        "migrate", parents=[common], help="copy all stored data into another backend",
        description="Copy every account, roster, vCard, private XML, keyval store (offline "
        "messages, blocklists, last activity) and pubsub node (config, affiliations, "
        "subscriptions, items, times) of the configured storage into the storage URL "
        "names (pubsub nodes into the tables of a sql target, into pubsub/ of an fs one), "
        "then read it back and compare. The source is only read; running it again after "
        "an interruption completes the copy.")
    p.add_argument("--to", required=True, metavar="URL",
                   help="sqlite:///PATH, postgresql://USER@HOST:PORT/DB, fs:///PATH or a "
                   "directory (a relative PATH starts at the site directory)")
    p.add_argument("--host", metavar="DOMAIN",
                   help="copy only the [[host]] serving DOMAIN (default: every host)")
    p.add_argument("--password-file", metavar="FILE",
                   help="the PostgreSQL password: the first line of FILE")
    p.add_argument("--skip-pubsub", action="store_true",
                   help="copy no pubsub nodes, leaving them only where they are (e.g. "
                   "a cluster whose fs hosts keep them in Redis, which servers on an fs "
                   "target go on using)")
    p.add_argument("--force", action="store_true",
                   help="copy even while the server runs (the copy may be inconsistent)")
    p.set_defaults(handler=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    paths = existing_paths(args)
    config = load(args.config, check_certs=False)
    pid = running_pid(paths.pid_file)
    if pid is not None and not args.force:
        raise CLIError(f"the server runs (pid {pid}) and would change the data while it is "
                       f"copied: stop it first (or pass --force)")
    hosts = _hosts(config, args.host)
    target = target_storage(args.to, paths.base, args.password_file)
    sources = _sources(hosts)
    for storage in sources:
        _check_source(storage, target)
    return asyncio.run(_migrate(config, hosts, sources, target, args.skip_pubsub))


@dataclass(frozen=True)
class _Services:
    """A host's pubsub services, to be read from its store."""

    host: HostConfig
    services: list[str]


def _hosts(config: Config, domain: str | None) -> list[HostConfig]:
    if domain is None:
        return list(config.hosts)
    try:
        host = config.host_for(prep_domain(domain))
    except JIDError as exc:
        raise CLIError(f"--host {domain!r} is not a domain name: {exc}") from None
    if host is None:
        raise CLIError(f"--host {domain}: no [[host]] serves it")
    return [host]


def _sources(hosts: list[HostConfig]) -> list[StorageConfig]:
    """The hosts' storages, each once (hosts may share one)."""
    out: dict[tuple[str, ...], StorageConfig] = {}
    for h in hosts:
        out.setdefault(_identity(h.storage), h.storage)
    return list(out.values())


def _identity(storage: StorageConfig) -> tuple[str, ...]:
    """What tells two storages apart: backend and where the data is."""
    if storage.backend == "fs":
        return ("fs", str(Path(storage.options["dir"]).resolve()))
    url = str(storage.options.get("url", ""))
    if url.startswith("sqlite:///"):
        return ("sql", "sqlite", str(Path(url[len("sqlite:///"):]).resolve()))
    return (storage.backend, url)


def _shown(url: str) -> str:
    """``url`` fit to print: a SQLite path as it is, any password ``***``."""
    return url if url.startswith("sqlite:") else safe_url(url)


def _shown_storage(storage: StorageConfig) -> str:
    if storage.backend == "fs":
        return f"fs {storage.options['dir']}"
    if storage.backend == "sql":
        return _shown(str(storage.options["url"]))
    return storage.backend


def _check_source(source: StorageConfig, target: StorageConfig) -> None:
    if _identity(source) == _identity(target):
        raise CLIError(f"the target {_shown_storage(target)} is a source: nothing to copy")
    if source.backend not in ("fs", "sql"):
        raise CLIError(f'storage backend "{source.backend}" keeps nothing to copy')
    url = str(source.options.get("url", ""))
    # Opening an SQLite file that is not there would create it: never write the source.
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise CLIError(f"source database {url[len('sqlite:///'):]} does not exist")


def target_storage(url: str, base: Path, password_file: str | None) -> StorageConfig:
    """The target ``--to URL`` names; a relative path starts at ``base``."""
    scheme, sep, rest = url.partition("://")
    if password_file is not None and scheme != "postgresql":
        raise CLIError("--password-file is for a postgresql:// target")
    if not sep:
        return StorageConfig("fs", {"dir": base / url})
    if scheme in ("fs", "sqlite") and rest.startswith("/") and rest != "/":
        path = base / rest[1:]
        if scheme == "fs":
            return StorageConfig("fs", {"dir": path})
        options: dict[str, object] = {"url": f"sqlite:///{path}"}
    elif scheme == "postgresql" and rest:
        options = {"url": url}
        if password_file is not None:
            if not Path(password_file).is_file():
                raise CLIError(f"--password-file {password_file}: no such file")
            options["password_file"] = Path(password_file)
    else:
        raise CLIError(f"--to {_shown(url)}: expected sqlite:///PATH, postgresql://USER@HOST"
                       f":PORT/DB, fs:///PATH or a directory")
    options["pool_size"] = 2
    return StorageConfig("sql", options)


def pubsub_target(storage: StorageConfig, target: Storage) -> PubSubStore:
    """The pubsub store a standalone server on ``storage`` would use (what
    :func:`~vinespy.storage.pubsub.store_for` picks for such a host): for a
    sql target, the tables of ``target`` (that storage, opened: the store
    uses its engine and leaves closing it to the caller); for fs, ``pubsub``
    in its directory. :func:`target_storage` gives nothing else, so every
    target keeps pubsub nodes."""
    host = HostConfig(domains=("migrate.invalid",), storage=storage)
    return store_for(Config(path=Path("--to")), host, target)


def _services(hosts: list[HostConfig]) -> list[_Services]:
    return [_Services(h, [f"{label}.{d}" for d in h.domains for label in h.pubsub])
            for h in hosts if h.pubsub]


def _progress(source: str) -> Callable[[int], None]:
    def report(n: int) -> None:
        print(f"{PROG} migrate: {n} JIDs copied from {source}", file=sys.stderr, flush=True)
    return report


async def _migrate(config: Config, hosts: list[HostConfig], sources: list[StorageConfig],
                   target_cfg: StorageConfig, skip_pubsub: bool) -> int:
    target = open_storage(target_cfg.backend, target_cfg.options)
    try:
        pubsub = pubsub_target(target_cfg, target)
        try:
            await target.open()
            services = [] if skip_pubsub else _services(hosts)
            return await _copy(config, sources, services, target, target_cfg, pubsub)
        finally:
            await pubsub.close()
    finally:
        await target.close()


async def _copy(config: Config, sources: list[StorageConfig], services: list[_Services],
                target: Storage, target_cfg: StorageConfig, pubsub: PubSubStore) -> int:
    copied, verified, owners = Counter[str](), Counter[str](), 0
    problems: list[str] = []
    for source_cfg in sources:
        shown = _shown_storage(source_cfg)
        print(f"copying {shown} to {_shown_storage(target_cfg)}", flush=True)
        # create=False: a source database without the schema (empty) is
        # refused, never given one: the source is only read.
        read_only = {"create": False} if source_cfg.backend == "sql" else {}
        options = {**source_cfg.options, **read_only}
        source = open_storage(source_cfg.backend, options)
        try:
            copied += await m.copy_storage(source, target, _progress(shown))
            counts, found = await m.verify_storage(source, target)
            owners += await m.count_owners(source)
        finally:
            await source.close()
        verified, problems = verified + counts, problems + found
    for s in services:
        ps_copied, ps_verified, found = await _pubsub(config, s, pubsub)
        copied += ps_copied
        verified, problems = verified + ps_verified, problems + found
    for line in m.count_lines(copied):
        print(line)
    _check(copied, verified, problems)
    extra = await m.count_owners(target) - owners
    print(f"verified: the target holds the same {sum(copied.values())} records"
          + (f" (and {extra} JIDs the sources do not have, left as they were)"
             if extra > 0 else ""))
    return 0


async def _pubsub(config: Config, s: _Services, target: PubSubStore
                  ) -> tuple[Counter[str], Counter[str], list[str]]:
    """Copy and verify one host's pubsub services: copied, verified, differences."""
    source = store_for(config, s.host)
    try:
        copied = await m.copy_pubsub(source, target, s.services)
        verified, problems = await m.verify_pubsub(source, target, s.services)
    finally:
        await source.close()
    return copied, verified, problems


def _check(copied: Counter[str], verified: Counter[str], problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CLIError(f"verification failed: {problems[0]}{more}")
    for kind in sorted(copied.keys() | verified.keys()):
        if copied[kind] != verified[kind]:
            raise CLIError(f"verification failed: {kind}: copied {copied[kind]}, "
                           f"the target holds {verified[kind]}")
