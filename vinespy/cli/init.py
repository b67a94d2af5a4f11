"""``vinespy init DOMAIN`` and ``vinespy cert DOMAIN``: a server directory, a certificate."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
from pathlib import Path

from ..accounts import create_user
from ..config import load
from ..jid import JID, JIDError, prep_domain
from ..storage import Contact, Storage
from ..tls import make_self_signed
from . import DEFAULT_CONFIG, PROG, CLIError
from .accounts import run_on_storage

EXAMPLE_USERS = ("alice", "arthur")

CONFIG_TEMPLATE = """\
# vinespy configuration for {domain}, written by `vinespy init`.
# Run `vinespy start` inside {dirname}/ (the directory holding conf/), or pass -c.
# Relative paths (certs, the data dir) start at that directory.

log = "info"                    # debug | info | warning | error
certs = "conf/certs"            # DOMAIN.crt + DOMAIN.key for each domain

[[host]]                        # one table per group of domains sharing settings
domains = [{domain_toml}]
private_storage = false         # XEP-0049 private XML storage
cross_domain_messages = false   # may users message the other hosts served here?
pubsub = []                     # ["games"] -> a pubsub service at games.{domain} (XEP-0060);
                                # its nodes: `vinespy pubsub list games.{domain}`
components = {{}}                 # {{ tea = "secr3t" }} -> tea.{domain} (XEP-0114)

# [host.options.pubsub]         # limits of each pubsub service (the defaults):
# max_items = 100               # the most items a node may keep (1-100000)
# max_nodes = 1000              # nodes per service
# max_payload = 65536           # bytes of one item's payload
# max_subscriptions_per_node = 1000  # subscribed JIDs per node
# max_subscriptions_per_jid = 10  # of them with one bare JID (its bare and full JIDs)

[host.storage]
backend = "fs"                  # fs | memory | null
dir = "data"                    # accounts and rosters; `vinespy register` works while running

[client]                        # client-to-server connections (c2s)
address = "0.0.0.0"
port = 5222
tls = "required"                # required | optional
direct_tls_port = 0             # XEP-0368 direct TLS (usually 5223); 0 = off
max_stanza_size = 65536
max_resources_per_account = 5

[http]                          # WebSocket, BOSH and the web chat page
address = "0.0.0.0"
port = 5280                     # plain HTTP; 0 = off. Logins over it only from this
                                # machine (loopback), or behind a TLS proxy (README)
tls_port = 5281                 # HTTPS with the certificate above; 0 = off

# [cluster]                     # uncomment to share users across servers through Redis
# url = "redis://127.0.0.1:6379/0"  # or rediss:// (TLS), unix:///PATH.sock
# password = "..."              # overrides the URL's; absent: the URL's
# db = 0                        # overrides the URL's; absent: the URL's
# node = "HOSTNAME-5222"        # unique, stable id; absent: host name + client port
# heartbeat = 1.0               # s between heartbeats
# dead_after = 5.0              # s without one before a node counts as dead (>= 3 x heartbeat)
# route_cache_ttl = 10.0        # s a remote user's node is cached; 0 = no cache
# inbox_maxlen = 100000         # about how many messages a node's Redis inbox keeps
# tls_ca = "conf/redis-ca.pem"  # rediss:// only: the CA of Redis's certificate
"""

# RFC 7622 §3.2: a domainpart is a DNS host name (IDNA2008) or an IP literal;
# init also makes a directory and file names of it, so nothing else gets in.
_HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def check_domain(text: str) -> str:
    """``text`` prepared as a JID domainpart that is a host name or IP literal."""
    domain = prep_domain(text)
    if domain.startswith("["):                  # an IPv6 literal, checked by prep_domain
        return domain
    try:
        ascii_form = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise JIDError(f"{text!r} is not a valid internationalized domain name") from None
    if not _HOSTNAME.fullmatch(ascii_form):
        raise JIDError(f"{text!r} is not a host name (letters, digits, '-' and '.')")
    return domain


def render_config(domain: str, dirname: str) -> str:
    """The config file ``init`` writes for ``domain``."""
    return CONFIG_TEMPLATE.format(domain=domain, dirname=dirname,
                                  domain_toml=json.dumps(domain, ensure_ascii=False))


def cmd_init(args: argparse.Namespace) -> int:
    """``vinespy init DOMAIN``: a ready-to-start server directory."""
    domain = check_domain(args.domain)
    root = Path(domain)
    try:
        root.mkdir()
    except FileExistsError:
        raise CLIError(f"{root} already exists") from None
    except OSError as exc:
        raise CLIError(f"cannot create {root}: {exc.strerror}") from None
    try:
        passwords = _populate(root, domain)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)     # nothing half-made is left behind
        raise
    width = max(len(f"{u}@{domain}") for u in EXAMPLE_USERS)
    print(f"Created {root}/ (config, certificate, data).")
    for user, password in passwords.items():
        print(f"  {user:<{width}}  password: {password}")
    print(f"Start it:  cd {root} && {PROG} start")
    print(f"Then log in with any XMPP client as {EXAMPLE_USERS[0]}@{domain} "
          "(server 127.0.0.1, port 5222; the certificate is self-signed),")
    print("or in a web browser on this machine: http://localhost:5280/ "
          "(from elsewhere: https://" + domain + ":5281/).")
    return 0


def _populate(root: Path, domain: str) -> dict[str, str]:
    """Fill a fresh ``root``; return {bare JID: password} of the example users."""
    try:
        conf = root / "conf"
        conf.mkdir()
        for name in ("data", "log", "pid"):
            private_dir(root / name)
        config_path = conf / "config.toml"
        _write_private(config_path, render_config(domain, root.name))
        make_self_signed(domain, conf / "certs")
    except OSError as exc:
        raise CLIError(f"cannot write {root}: {exc}") from None
    # Loading what was just written proves the template and the certificate
    # valid, and puts the users exactly where the server will look for them.
    host = load(config_path).host_for(domain)
    assert host is not None
    passwords = {f"{u}@{domain}": secrets.token_urlsafe(12) for u in EXAMPLE_USERS}
    run_on_storage(host, lambda s: _make_example_users(s, passwords))
    return passwords


async def _make_example_users(storage: Storage, passwords: dict[str, str]) -> None:
    """Create the users; each has every other in its roster with subscription both."""
    users = [await create_user(storage, JID.parse(j), pw) for j, pw in passwords.items()]
    for user in users:
        for other in users:
            if other is not user:
                user.roster[other.jid] = Contact(other.jid, subscription="both")
        await storage.save_user(user)


def private_dir(path: Path) -> None:
    """Make ``path`` (if missing) a directory only its owner may enter."""
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)                   # mkdir's mode is filtered through the umask


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` (it must not exist) readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)
        f.write(text)


def cmd_cert(args: argparse.Namespace) -> int:
    """``vinespy cert DOMAIN [--force] [--key-type ecdsa|rsa]``: a self-signed certificate."""
    domain = check_domain(args.domain)
    config_path = Path(args.config)
    if config_path.exists():
        certs = load(config_path, check_certs=False).certs
    elif args.config != DEFAULT_CONFIG:
        raise CLIError(f"{config_path}: no such file")
    else:
        certs = Path("conf/certs")
    try:
        certs.mkdir(parents=True, exist_ok=True)
        crt, key = make_self_signed(domain, certs, overwrite=args.force,
                                    key_type=args.key_type)
    except FileExistsError as exc:
        name = exc.filename or f"the certificate of {domain} in {certs}"
        raise CLIError(f"{name} already exists; add --force to replace it") from None
    except OSError as exc:
        raise CLIError(f"cannot write to {certs}: {exc.strerror or exc}") from None
    print(f"Wrote {crt}")
    print(f"Wrote {key}")
    return 0
