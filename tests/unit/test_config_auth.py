"""``[host.auth]``: internal (the default) or ldap, and every kind of error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_config import HOST, error, write
from vinespy.config import AuthConfig, load

LDAP = HOST + '[host.auth]\nbackend = "ldap"\n'
GOOD = LDAP + 'url = "ldap://ldap.wonderland.lit"\nbase = "ou=people,dc=wonderland,dc=lit"\n'


def test_no_auth_table_is_internal(tmp_path: Path) -> None:
    """Without [host.auth] the storage's SCRAM keys check passwords."""
    assert load(write(tmp_path, HOST), check_certs=False).hosts[0].auth == AuthConfig()


def test_ldap_defaults(tmp_path: Path) -> None:
    """url and base are all LDAP needs: anonymous search, uid filter, 5 s, 60 s cache."""
    auth = load(write(tmp_path, GOOD), check_certs=False).hosts[0].auth
    assert auth == AuthConfig(backend="ldap", url="ldap://ldap.wonderland.lit",
                              base="ou=people,dc=wonderland,dc=lit")
    assert (auth.filter, auth.timeout, auth.cache_ttl, auth.starttls) == \
        ("(uid={user})", 5.0, 60.0, False)


def test_ldap_every_key(tmp_path: Path) -> None:
    """Files are relative to the site directory; numbers become floats."""
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "bindpw").write_text("s3cret\n")
    auth = load(write(tmp_path, GOOD + (
        'starttls = true\nca_file = "ca.pem"\nbind_dn = "cn=xmpp,dc=wonderland,dc=lit"\n'
        'bind_password_file = "bindpw"\nfilter = "(&(objectClass=person)(mail={user}@*))"\n'
        "timeout = 2\ncache_ttl = 0\n")), check_certs=False).hosts[0].auth
    assert auth.starttls and auth.ca_file == tmp_path / "ca.pem"
    assert auth.bind_password_file == tmp_path / "bindpw" and auth.bind_password == ""
    assert (auth.timeout, auth.cache_ttl) == (2.0, 0.0)
    assert isinstance(auth.timeout, float) and isinstance(auth.cache_ttl, float)


def test_ldaps_with_a_port(tmp_path: Path) -> None:
    """ldaps://HOST:PORT/ is taken as written."""
    auth = load(write(tmp_path, GOOD.replace("ldap://ldap.wonderland.lit",
                                             "ldaps://10.0.0.5:1636/")),
                check_certs=False).hosts[0].auth
    assert auth.url == "ldaps://10.0.0.5:1636/"


@pytest.mark.parametrize(("table", "message"), [
    ('backend = "kerberos"\n',
     'host[0].auth.backend: expected one of "internal", "ldap", got "kerberos"'),
    ('backend = "internal"\nbase = "dc=x"\n',
     'host[0].auth.base: only used with backend = "ldap"'),
])
def test_bad_backend(tmp_path: Path, table: str, message: str) -> None:
    """An unknown backend, or LDAP keys without LDAP, is one line naming the key."""
    assert error(tmp_path, HOST + "[host.auth]\n" + table) == message


URL = "host[0].auth.url: expected ldap://HOST[:PORT] or ldaps://HOST[:PORT], got "


@pytest.mark.parametrize(("keys", "message"), [
    ('base = "dc=x"\n', 'host[0].auth.url: required with backend = "ldap"'),
    ('url = "ldap://h"\n', 'host[0].auth.base: required with backend = "ldap"'),
    ('url = "http://h"\nbase = "b"\n', URL + '"http://h"'),
    ('url = "ldap://"\nbase = "b"\n', URL + '"ldap://"'),
    ('url = "ldap://h:99999"\nbase = "b"\n', URL + '"ldap://h:99999"'),
    ('url = "ldap://h/dc=x??sub"\nbase = "b"\n', URL + '"ldap://h/dc=x??sub"'),
    ('url = "ldap://cn=admin:hunter2@h"\nbase = "b"\n',
     'host[0].auth.url: no user or password in the URL, got "ldap://cn=admin:***@h" '
     "(the search account is bind_dn and bind_password)"),
    ('url = 389\nbase = "b"\n', "host[0].auth.url: expected a non-empty string, got 389"),
    ('url = "ldaps://h"\nbase = "b"\nstarttls = true\n',
     "host[0].auth.starttls: ldaps:// is TLS already; StartTLS is for ldap://"),
    ('url = "ldap://h"\nbase = "b"\nstarttls = "yes"\n',
     'host[0].auth.starttls: expected true or false, got "yes"'),
    ('url = "ldap://h"\nbase = "b"\nfilter = "uid={user}"\n', None),
    ('url = "ldap://h"\nbase = "b"\nfilter = "(uid=alice)"\n', None),
    ('url = "ldap://h"\nbase = "b"\ntimeout = 0\n',
     "host[0].auth.timeout: expected a number from 0.1 to 300, got 0"),
    ('url = "ldap://h"\nbase = "b"\ncache_ttl = -1\n',
     "host[0].auth.cache_ttl: expected a number from 0 to 86400, got -1"),
    ('url = "ldap://h"\nbase = "b"\nca_file = "nowhere.pem"\n', None),
    ('url = "ldap://h"\nbase = "b"\nbind_password = "hunter2"\nbind_password_file = "pw"\n',
     "host[0].auth.bind_password_file: give bind_password or bind_password_file, not both"),
    ('url = "ldap://h"\nbase = "b"\nbindpw = "hunter2"\n',
     '[host[0].auth] unknown key "bindpw" (did you mean "bind_password"?)'),
])
def test_bad_ldap_key(tmp_path: Path, keys: str, message: str | None) -> None:
    """Each bad LDAP key is one line naming it; a password is never shown."""
    (tmp_path / "pw").write_text("hunter2\n")
    got = error(tmp_path, LDAP + keys)
    assert "hunter2" not in got
    if message is None:
        key = "ca_file" if "ca_file" in keys else "filter"
        assert got.startswith(f"host[0].auth.{key}: "), got
    else:
        assert got == message
