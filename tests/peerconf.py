"""Account files and config quoting for Debian's Prosody 0.12 and ejabberd
23.01, shared by the suite's federation peers (tests/peerproc.py) and the
benchmark's targets (bench/targets.py): both run those servers out of a
directory of their own, never the system-wide /etc and /var/lib installs.

No pytest, no process handling here: bench/ imports it on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path


def scram_sha1_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """RFC 5802 (StoredKey, ServerKey) for ``password`` with SHA-1."""
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha1")
    stored_key = hashlib.sha1(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha1")
    return stored_key, server_key


def prosody_escape(s: str) -> str:
    """util.datamanager's encode: every byte but ASCII letters and digits as %xx."""
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"%{b:02x}"
                   for b in s.encode())


def prosody_account(password: str, iterations: int) -> str:
    """The body of a mod_auth_internal_hashed account file: hex stored_key and
    server_key, the raw salt string (used as the PBKDF2 salt bytes)."""
    salt = secrets.token_hex(16)
    stored, server = scram_sha1_keys(password, salt.encode(), iterations)
    return ("return {\n"
            f'\t["iteration_count"] = {iterations};\n'
            f'\t["salt"] = "{salt}";\n'
            f'\t["server_key"] = "{server.hex()}";\n'
            f'\t["stored_key"] = "{stored.hex()}";\n'
            "};\n")


def prosody_account_path(data_path: Path, domain: str, user: str) -> Path:
    """Where Prosody's internal storage keeps ``user@domain``'s account:
    ``data_path/<host, %-escaped>/accounts/<user, %-escaped>.dat``."""
    return data_path / prosody_escape(domain) / "accounts" / f"{prosody_escape(user)}.dat"


def write_prosody_accounts(data_path: Path, domain: str, users: dict[str, str],
                           iterations: int = 4096) -> None:
    """Create ``users`` (name -> password) in Prosody's internal storage,
    without prosodyctl (one Lua process per account is slow)."""
    for user, password in users.items():
        path = prosody_account_path(data_path, domain, user)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(prosody_account(password, iterations))


def lua_str(s: str | Path) -> str:
    """``s`` as a Lua string literal (JSON's escapes are Lua's, ASCII kept as is)."""
    return json.dumps(str(s), ensure_ascii=False)


def erl_binary(s: str) -> str:
    """``s`` as an Erlang binary expression of its UTF-8 bytes (no quoting at
    all, so any text survives a command line's ``-eval``)."""
    return "list_to_binary([" + ",".join(str(b) for b in s.encode()) + "])"
