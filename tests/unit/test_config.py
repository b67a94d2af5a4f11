"""conf/config.toml -> Config: the template, path resolution, and every kind of error."""

from __future__ import annotations

import re
import shutil
import socket
from dataclasses import fields
from pathlib import Path

import pytest

from vinespy.cluster.keys import default_node_id
from vinespy.config import (ClientConfig, ClusterConfig, ComponentConfig, Config, ConfigError,
                            HostConfig, HttpConfig, ServerConfig, StorageConfig, base_dir, load)
from vinespy.tls import make_self_signed

TEMPLATE = Path(__file__).resolve().parents[2] / "conf" / "config.toml"
HOST = '[[host]]\ndomains = ["wonderland.lit"]\n'


def write(tmp_path: Path, text: str, name: str = "conf/config.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str) -> str:
    """The one-line message load() gives for ``text``, minus the file name."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, check_certs=False)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message[len(f"{path}: "):]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Self-signed pairs: a/ and b/ for wonderland.lit (different keys), a/ for other.lit."""
    root = tmp_path_factory.mktemp("pairs")
    make_self_signed("wonderland.lit", root / "a")
    make_self_signed("other.lit", root / "a")
    make_self_signed("wonderland.lit", root / "b")
    return root


# -- what loads ------------------------------------------------------------

def test_template_loads_with_the_defaults() -> None:
    """The shipped template loads and says exactly the dataclass defaults."""
    config = load(TEMPLATE, check_certs=False)
    root = TEMPLATE.parent.parent
    assert config.path == TEMPLATE
    assert config.log == Config.log
    assert config.certs == root / Config.certs
    assert config.hosts == (HostConfig(domains=("wonderland.lit",),
                                       storage=StorageConfig("fs", {"dir": root / "data"})),)
    assert config.client == ClientConfig()
    assert config.server == ServerConfig()
    assert config.http == HttpConfig()
    assert config.component == ComponentConfig()
    assert config.cluster is None


def test_minimal_config(tmp_path: Path) -> None:
    """One [[host]] with its domains is a whole config; the rest is defaults."""
    config = load(write(tmp_path, HOST), check_certs=False)
    assert config.domains == ("wonderland.lit",)
    assert config.client == ClientConfig()
    assert config.hosts[0].storage == StorageConfig("fs", {"dir": tmp_path / "data"})
    assert config.hosts[0].modules is None
    assert config.host_for("wonderland.lit") is config.hosts[0]


def test_full_host_and_sections(tmp_path: Path) -> None:
    """Every host key is parsed and prepared; sections and [cluster] are read."""
    config = load(write(tmp_path, """
        log = "debug"
        [[host]]
        domains = ["Wonderland.LIT", "verona.lit."]
        private_storage = true
        cross_domain_messages = true
        pubsub = ["Games", "scores"]
        components = { tea = "secr3t" }
        modules = ["roster", "ping"]
        [host.storage]
        backend = "memory"
        flavour = "plain"
        [[host]]
        domains = ["shakespeare.lit"]
        [client]
        port = 0
        direct_tls_port = 5223
        auth_timeout = 5
        resource_conflict = "refuse"
        [cluster]
        url = "unix:///run/redis.sock"
        """), check_certs=False)
    h = config.hosts[0]
    assert config.log == "debug"
    assert config.domains == ("wonderland.lit", "verona.lit", "shakespeare.lit")
    assert (h.private_storage, h.cross_domain_messages) == (True, True)
    assert h.pubsub == ("games", "scores")
    assert h.components == {"tea": "secr3t"}
    assert h.modules == ("roster", "ping")
    assert h.storage == StorageConfig("memory", {"flavour": "plain"})
    assert config.client.port == 0 and config.client.direct_tls_port == 5223
    assert config.client.auth_timeout == 5.0 and isinstance(config.client.auth_timeout, float)
    assert config.client.resource_conflict == "refuse"
    assert config.cluster == ClusterConfig("unix:///run/redis.sock", node=default_node_id(0))
    assert config.host_for("shakespeare.lit") is config.hosts[1]


# -- relative paths ----------------------------------------------------------

def test_paths_in_conf_dir_start_from_its_parent(tmp_path: Path) -> None:
    """A file in DOMAIN/conf/ resolves certs and data against DOMAIN/."""
    path = write(tmp_path, 'certs = "conf/certs"\n' + HOST + '[host.storage]\ndir = "data"\n')
    config = load(path, check_certs=False)
    assert base_dir(path) == tmp_path
    assert config.certs == tmp_path / "conf" / "certs"
    assert config.hosts[0].storage.options["dir"] == tmp_path / "data"


def test_paths_elsewhere_start_from_the_file_dir(tmp_path: Path) -> None:
    """A file outside a conf/ directory resolves against its own directory."""
    path = write(tmp_path, 'certs = "../certs"\n' + HOST + '[host.storage]\ndir = "store"\n',
                 "etc/vinespy.toml")
    config = load(path, check_certs=False)
    assert config.certs == tmp_path / "certs"
    assert config.hosts[0].storage.options["dir"] == tmp_path / "etc" / "store"


def test_absolute_paths_stay(tmp_path: Path) -> None:
    """Absolute paths are used as written."""
    config = load(write(tmp_path, f'certs = "{tmp_path}/x"\n' + HOST
                        + f'[host.storage]\ndir = "{tmp_path}/y"\n'), check_certs=False)
    assert config.certs == tmp_path / "x"
    assert config.hosts[0].storage.options["dir"] == tmp_path / "y"


def test_relative_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path stays relative in errors; the loaded paths are absolute."""
    write(tmp_path, HOST)
    monkeypatch.chdir(tmp_path)
    config = load("conf/config.toml", check_certs=False)
    assert config.path == tmp_path / "conf" / "config.toml"
    assert config.certs == tmp_path / "conf" / "certs"
    write(tmp_path, "log = 1\n" + HOST)
    with pytest.raises(ConfigError, match=r'^conf/config\.toml: log: expected one of "debug"'):
        load("conf/config.toml", check_certs=False)


# -- file and syntax errors --------------------------------------------------

def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing file is reported with the path as given and the reason."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load("conf/x.toml")
    assert str(info.value) == "conf/x.toml: cannot read: No such file or directory"


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the line."""
    assert "line 3" in error(tmp_path, 'log = "info"\n\nport 5222\n')


def test_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a ConfigError, not a traceback."""
    path = tmp_path / "c.toml"
    path.write_bytes(b'log = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(path)


# -- key and type errors -----------------------------------------------------

def test_unknown_key_suggests(tmp_path: Path) -> None:
    """An unknown key in a section names it and suggests the close one."""
    assert error(tmp_path, HOST + "[client]\nprot = 5222\n") == \
        '[client] unknown key "prot" (did you mean "port"?)'


def test_unknown_key_without_suggestion(tmp_path: Path) -> None:
    """With nothing close, there is no suggestion."""
    assert error(tmp_path, HOST + "[client]\nzzz = 1\n") == '[client] unknown key "zzz"'


def test_unknown_top_level_key_and_host_key(tmp_path: Path) -> None:
    """Unknown keys at the top and in [[host]] are caught too."""
    assert error(tmp_path, 'lgo = "info"\n' + HOST) == 'unknown key "lgo" (did you mean "log"?)'
    assert error(tmp_path, HOST + "privat_storage = true\n") == \
        '[host[0]] unknown key "privat_storage" (did you mean "private_storage"?)'


def test_unknown_section(tmp_path: Path) -> None:
    """An unknown table is an unknown section, with a suggestion."""
    assert error(tmp_path, HOST + "[clinet]\nport = 1\n") == \
        "unknown section [clinet] (did you mean [client]?)"
    assert error(tmp_path, "[[hots]]\ndomains = []\n") == \
        "unknown section [[hots]] (did you mean [[host]]?)"


def test_wrong_type(tmp_path: Path) -> None:
    """A string for a port says what was expected and what was got."""
    assert error(tmp_path, HOST + '[client]\nport = "abc"\n') == \
        'client.port: expected an integer from 1 to 65535 (or 0 for any free port), got "abc"'


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    """TOML true is not accepted where a number is expected."""
    assert error(tmp_path, HOST + "[server]\nport = true\n") == \
        "server.port: expected an integer from 1 to 65535 (or 0 for any free port), got true"
    assert error(tmp_path, HOST + "[client]\nauth_timeout = true\n") == \
        "client.auth_timeout: expected a number from 1 to 3600, got true"


def test_bool_field_wants_bool(tmp_path: Path) -> None:
    """A boolean key rejects a string."""
    assert error(tmp_path, HOST + 'private_storage = "yes"\n') == \
        'host[0].private_storage: expected true or false, got "yes"'


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("port", "65536", "an integer from 1 to 65535 (or 0 for any free port)"),
    ("direct_tls_port", "-1", "an integer from 1 to 65535 (or 0 for off)"),
    ("max_stanza_size", "9999", "an integer from 10000 to 16777216"),
    ("max_stanza_size", "16777217", "an integer from 10000 to 16777216"),
    ("max_resources_per_account", "0", "an integer of at least 1"),
    ("rate_limit", "-1", "an integer of at least 0"),
    ("rate_burst", "1023", "an integer of at least 1024"),
    ("auth_timeout", "0.5", "a number from 1 to 3600"),
    ("auth_timeout", "3601", "a number from 1 to 3600"),
    ("auth_timeout", "nan", "a number from 1 to 3600"),
    ("max_auth_failures", "11", "an integer from 1 to 10"),
])
def test_out_of_range(tmp_path: Path, key: str, value: str, expected: str) -> None:
    """Each ranged [client] key rejects a value just outside its range."""
    assert error(tmp_path, HOST + f"[client]\n{key} = {value}\n") == \
        f"client.{key}: expected {expected}, got {value}"


@pytest.mark.parametrize(("text", "message"), [
    ('log = "verbose"\n' + HOST,
     'log: expected one of "debug", "info", "warning", "error", got "verbose"'),
    (HOST + '[client]\ntls = "maybe"\n',
     'client.tls: expected one of "required", "optional", got "maybe"'),
    (HOST + '[client]\nresource_conflict = "kick"\n',
     'client.resource_conflict: expected one of "replace", "refuse", got "kick"'),
])
def test_bad_enum(tmp_path: Path, text: str, message: str) -> None:
    """Enumerated keys list the allowed values."""
    assert error(tmp_path, text) == message


def test_direct_tls_port_differs(tmp_path: Path) -> None:
    """The direct TLS listener cannot share the STARTTLS port."""
    assert error(tmp_path, HOST + "[client]\nport = 5222\ndirect_tls_port = 5222\n") == \
        "client.direct_tls_port: must differ from client.port (both are 5222)"


def test_server_nameservers(tmp_path: Path) -> None:
    """[server] nameservers: IP addresses, each with its own port (53 when
    left out; IPv6 in brackets with a port); absent = the system's."""
    config = load(write(tmp_path, HOST + '[server]\nnameservers = ["127.0.0.1:5353", '
                        '"[::1]:53", "10.0.0.53", "fd00::53"]\n'), check_certs=False)
    assert config.server.nameservers == (("127.0.0.1", 5353), ("::1", 53), ("10.0.0.53", 53),
                                         ("fd00::53", 53))
    assert load(write(tmp_path, HOST), check_certs=False).server.nameservers == ()


@pytest.mark.parametrize(("value", "message"), [
    ("[]", 'expected an array of DNS server addresses such as ["10.0.0.53"], got an empty array'),
    ('"10.0.0.53"', 'expected an array of DNS server addresses such as ["10.0.0.53"], '
                    'got "10.0.0.53"'),
    ('["dns.example.org"]', '[0]: expected an IP address with an optional port such as '
                            '"10.0.0.53", "127.0.0.1:5353" or "[::1]:53", got "dns.example.org"'),
    ('["10.0.0.53:0"]', '[0]: expected an IP address with an optional port such as '
                        '"10.0.0.53", "127.0.0.1:5353" or "[::1]:53", got "10.0.0.53:0"'),
    ('["10.0.0.53", 53]', '[1]: expected an IP address with an optional port such as '
                          '"10.0.0.53", "127.0.0.1:5353" or "[::1]:53", got 53'),
    ('["10.0.0.53", "10.0.0.53:53"]', '[1]: "10.0.0.53:53" is listed twice'),
])
def test_server_nameservers_refused(tmp_path: Path, value: str, message: str) -> None:
    """A nameserver that is not an address (with a port from 1 to 65535) is
    refused in one line; so are an empty list and a server listed twice."""
    got = error(tmp_path, HOST + f"[server]\nnameservers = {value}\n")
    assert got == "server.nameservers" + (message if message.startswith("[") else ": " + message)


def test_section_must_be_table(tmp_path: Path) -> None:
    """A section given as a plain value is refused."""
    assert error(tmp_path, "client = 5\n" + HOST) == "client: expected a table, got 5"


# -- hosts -------------------------------------------------------------------

def test_no_host(tmp_path: Path) -> None:
    """At least one [[host]] is required."""
    assert error(tmp_path, 'log = "info"\n') == \
        "no [[host]] table: at least one is required"


def test_single_bracket_host(tmp_path: Path) -> None:
    """[host] instead of [[host]] gets a pointed hint."""
    assert "double brackets" in error(tmp_path, '[host]\ndomains = ["a.lit"]\n')


def test_missing_domains(tmp_path: Path) -> None:
    """domains is the one required key of a host."""
    assert error(tmp_path, "[[host]]\nprivate_storage = true\n") == \
        '[host[0]] missing key "domains"'


def test_empty_domains(tmp_path: Path) -> None:
    """An empty domains list is refused."""
    assert error(tmp_path, "[[host]]\ndomains = []\n") == \
        "host[0].domains: expected a non-empty array of domain names, got an empty array"


def test_duplicate_domain_across_hosts(tmp_path: Path) -> None:
    """A domain (after preparation) belongs to one host only."""
    assert error(tmp_path, HOST + '[[host]]\ndomains = ["WONDERLAND.lit"]\n') == \
        'host[1].domains[0]: "wonderland.lit" is already used by host[0].domains[0]'


def test_duplicate_domain_in_host(tmp_path: Path) -> None:
    """The same domain twice in one host is refused."""
    assert error(tmp_path, '[[host]]\ndomains = ["a.lit", "a.lit"]\n') == \
        'host[0].domains[1]: "a.lit" is listed twice'


def test_bad_domain(tmp_path: Path) -> None:
    """A domain with a space is not a domain name."""
    assert error(tmp_path, '[[host]]\ndomains = ["a b"]\n').startswith(
        'host[0].domains[0]: "a b" is not a domain name: ')


@pytest.mark.parametrize("label", ["a.b", "-x", "x y", "", "a" * 64, "a_b"])
def test_bad_pubsub_label(tmp_path: Path, label: str) -> None:
    """A pubsub entry must be one DNS label."""
    assert error(tmp_path, HOST + f'pubsub = ["{label}"]\n') == \
        f'host[0].pubsub[0]: expected a single DNS label such as "games", got "{label}"'


def test_subdomain_clash(tmp_path: Path) -> None:
    """A pubsub subdomain may not be a served domain or a component."""
    assert error(tmp_path, HOST + 'pubsub = ["games"]\n'
                 '[[host]]\ndomains = ["games.wonderland.lit"]\n') == \
        'host[0].pubsub[0]: "games.wonderland.lit" is already used by host[1].domains[0]'
    assert "already used by host[0].pubsub[0]" in \
        error(tmp_path, HOST + 'pubsub = ["tea"]\ncomponents = { tea = "s" }\n')


def test_pubsub_services(tmp_path: Path) -> None:
    """Each label of a host is a service under each of the host's domains, prepared
    (lower case); Config.pubsub_services() maps each service domain to its host."""
    config = load(write(tmp_path, '[[host]]\ndomains = ["Wonderland.lit", "verona.lit"]\n'
                        'pubsub = ["Games", "scores"]\n'
                        '[[host]]\ndomains = ["shakespeare.lit"]\n'
                        '[[host]]\ndomains = ["other.lit"]\npubsub = ["games"]\n'),
                  check_certs=False)
    first, second, third = config.hosts
    assert first.pubsub == ("games", "scores") and second.pubsub == ()
    services = config.pubsub_services()
    assert list(services) == ["games.wonderland.lit", "scores.wonderland.lit",
                              "games.verona.lit", "scores.verona.lit", "games.other.lit"]
    assert all(services[s] is first for s in list(services)[:4])
    assert services["games.other.lit"] is third


def test_no_pubsub_services(tmp_path: Path) -> None:
    """No pubsub key, or an empty array: no service (the template's default)."""
    assert load(write(tmp_path, HOST), check_certs=False).pubsub_services() == {}
    config = load(write(tmp_path, HOST + "pubsub = []\n"), check_certs=False)
    assert config.hosts[0].pubsub == () and config.pubsub_services() == {}
    assert load(TEMPLATE, check_certs=False).pubsub_services() == {}


def test_pubsub_accepts_an_idn_label(tmp_path: Path) -> None:
    """A label in Unicode is prepared and checked in its IDNA form."""
    config = load(write(tmp_path, HOST + 'pubsub = ["Jeux-Vidéo"]\n'), check_certs=False)
    assert config.hosts[0].pubsub == ("jeux-vidéo",)
    assert list(config.pubsub_services()) == ["jeux-vidéo.wonderland.lit"]


@pytest.mark.parametrize("value,message", [
    ('"games"', 'host[0].pubsub: expected an array of DNS labels such as ["games"], got "games"'),
    ("{ games = 1 }", 'host[0].pubsub: expected an array of DNS labels such as ["games"], '
     "got a table"),
    ("[1]", 'host[0].pubsub[0]: expected a single DNS label such as "games", got 1'),
    ('["games", "GAMES"]', 'host[0].pubsub[1]: "games" is listed twice'),
    ('["games", "scores", "games"]', 'host[0].pubsub[2]: "games" is listed twice'),
    ('["games.scores"]', 'host[0].pubsub[0]: expected a single DNS label such as "games", '
     'got "games.scores"'),
    ('["game$"]', 'host[0].pubsub[0]: expected a single DNS label such as "games", '
     'got "game$"'),
    ('["games-"]', 'host[0].pubsub[0]: expected a single DNS label such as "games", '
     'got "games-"'),
])
def test_bad_pubsub_values(tmp_path: Path, value: str, message: str) -> None:
    """pubsub is an array of distinct labels (duplicates found after preparation)."""
    assert error(tmp_path, HOST + f"pubsub = {value}\n") == message


def test_pubsub_service_clashes(tmp_path: Path) -> None:
    """A service domain may not be a served domain of any host, nor another
    host's service or component: one line naming both places."""
    # a domain of the same host
    assert error(tmp_path, '[[host]]\ndomains = ["wonderland.lit", "games.wonderland.lit"]\n'
                 'pubsub = ["games"]\n') == \
        'host[0].pubsub[0]: "games.wonderland.lit" is already used by host[0].domains[1]'
    # a domain of a later host (domains are claimed before services)
    assert error(tmp_path, HOST + 'pubsub = ["scores", "games"]\n'
                 '[[host]]\ndomains = ["GAMES.wonderland.lit"]\n') == \
        'host[0].pubsub[1]: "games.wonderland.lit" is already used by host[1].domains[0]'
    # a component of the same host (services of different hosts cannot meet:
    # LABEL.DOMAIN is one label longer than DOMAIN, and domains are distinct)
    assert error(tmp_path, HOST + 'components = { games = "s" }\npubsub = ["games"]\n') == \
        'host[0].components.games: "games.wonderland.lit" is already used by host[0].pubsub[0]'
    # with several domains, the clash is found under the domain where it is
    assert error(tmp_path, '[[host]]\ndomains = ["a.lit", "b.lit"]\npubsub = ["games"]\n'
                 '[[host]]\ndomains = ["games.b.lit"]\n') == \
        'host[0].pubsub[0]: "games.b.lit" is already used by host[1].domains[0]'


def test_pubsub_limits(tmp_path: Path) -> None:
    """[host.options.pubsub] max_items, max_nodes, max_payload: integers within
    the pubsub module's bounds, per host; absent keys keep the module's defaults."""
    config = load(write(tmp_path, HOST + 'pubsub = ["games"]\n[host.options.pubsub]\n'
                        "max_items = 1\nmax_nodes = 10000000\nmax_payload = 256\n"
                        '[[host]]\ndomains = ["other.lit"]\npubsub = ["games"]\n'
                        "[host.options.pubsub]\nmax_items = 100000\n"), check_certs=False)
    assert config.hosts[0].options == {"pubsub": {"max_items": 1, "max_nodes": 10000000,
                                                  "max_payload": 256}}
    assert config.hosts[1].options == {"pubsub": {"max_items": 100000}}


@pytest.mark.parametrize("table,message", [
    ("max_items = 0", "max_items: expected an integer from 1 to 100000, got 0"),
    ("max_items = 100001", "max_items: expected an integer from 1 to 100000, got 100001"),
    ("max_nodes = 0", "max_nodes: expected an integer from 1 to 10000000, got 0"),
    ("max_nodes = 10000001",
     "max_nodes: expected an integer from 1 to 10000000, got 10000001"),
    ("max_payload = 255", "max_payload: expected an integer from 256 to 16777216, got 255"),
    ("max_payload = 16777217",
     "max_payload: expected an integer from 256 to 16777216, got 16777217"),
    ('max_items = "100"', 'max_items: expected an integer from 1 to 100000, got "100"'),
    ("max_items = 1.5", "max_items: expected an integer from 1 to 100000, got 1.5"),
    ("max_items = true", "max_items: expected an integer from 1 to 100000, got true"),
])
def test_bad_pubsub_limits(tmp_path: Path, table: str, message: str) -> None:
    """Out of range or not an integer: one line naming the option and its bounds."""
    assert error(tmp_path, HOST + f"[host.options.pubsub]\n{table}\n") == \
        f"host[0].options.pubsub.{message}"


def test_unknown_pubsub_limit_suggests(tmp_path: Path) -> None:
    assert error(tmp_path, HOST + "[host.options.pubsub]\nmax_item = 5\n") == \
        'host[0].options.pubsub: unknown option "max_item" (did you mean "max_items"?)'


def test_templates_document_the_pubsub_limits(tmp_path: Path) -> None:
    """conf/config.toml and the file `vinespy init` writes show every pubsub
    option commented out; uncommented, each loads as the module's default."""
    from vinespy.cli.init import render_config
    from vinespy.modules import module_class
    declared = module_class("pubsub").options
    for text in (TEMPLATE.read_text(), render_config("wonderland.lit", "wonderland.lit")):
        block = text[text.index("# [host.options.pubsub]"):]
        block = block[:block.index("\n\n")]
        keys = re.findall(r"^# (\w+) = ", block, re.M)
        assert sorted(keys) == sorted(declared)
        uncommented = re.sub(r"^# (\[host\.options\.pubsub\]|\w+ = )", r"\1", block,
                             flags=re.M)
        config = load(write(tmp_path, text.replace(block, uncommented)), check_certs=False)
        assert config.hosts[0].options["pubsub"] == {k: o.default for k, o in declared.items()}


def test_bad_component(tmp_path: Path) -> None:
    """Components map a DNS label to a non-empty secret."""
    assert error(tmp_path, HOST + 'components = { tea = "" }\n') == \
        "host[0].components.tea: expected a non-empty string (the component's shared secret)" \
        ', got ""'
    assert "single DNS label" in error(tmp_path, HOST + 'components = { "a.b" = "s" }\n')


def test_bad_modules(tmp_path: Path) -> None:
    """modules is a non-empty list of distinct names."""
    assert error(tmp_path, HOST + 'modules = "ping"\n').startswith(
        'host[0].modules: expected an array of module names')
    assert error(tmp_path, HOST + 'modules = ["ping", "ping"]\n') == \
        'host[0].modules[1]: "ping" is listed twice'


def test_bad_storage_backend(tmp_path: Path) -> None:
    """An unknown backend lists the known ones."""
    assert error(tmp_path, HOST + '[host.storage]\nbackend = "mysql"\n').startswith(
        'host[0].storage.backend: expected one of "fs", ')


SQL = HOST + '[host.storage]\nbackend = "sql"\n'


def test_sql_storage(tmp_path: Path) -> None:
    """sql: a relative SQLite path starts at the site directory, an absolute one
    stays; postgresql:// as written; pool_size 5 unless given; password_file
    made absolute."""
    opts = load(write(tmp_path, SQL + 'url = "sqlite:///data/vinespy.db"\n'),
                check_certs=False).hosts[0].storage.options
    assert opts == {"url": f"sqlite:///{tmp_path}/data/vinespy.db", "pool_size": 5}
    opts = load(write(tmp_path, SQL + f'url = "sqlite:///{tmp_path}/x.db"\npool_size = 2\n'),
                check_certs=False).hosts[0].storage.options
    assert opts == {"url": f"sqlite:///{tmp_path}/x.db", "pool_size": 2}
    (tmp_path / "pw").write_text("secret\n")
    url = "postgresql://vines@db.example.net:5432/vines"
    opts = load(write(tmp_path, SQL + f'url = "{url}"\npassword_file = "pw"\n'),
                check_certs=False).hosts[0].storage.options
    assert opts == {"url": url, "password_file": tmp_path / "pw", "pool_size": 5}


@pytest.mark.parametrize(("table", "message"), [
    ("", 'host[0].storage.url: required with backend = "sql" '
         "(sqlite:///data/vinespy.db or postgresql://USER@HOST:PORT/DB)"),
    ('url = "mysql://u:hunter2@h/db"\n', "host[0].storage.url: expected sqlite:///PATH or "
     'postgresql://USER:PASSWORD@HOST:PORT/DB, got "mysql://u:***@h/db"'),
    ('url = "sqlite://data.db"\n', "host[0].storage.url: expected sqlite:///PATH or "
     'postgresql://USER:PASSWORD@HOST:PORT/DB, got "sqlite://data.db"'),
    ('url = "postgresql://h/db"\npassword = "a"\npassword_file = "b"\n',
     "host[0].storage.password_file: give password or password_file, not both"),
    ('url = "postgresql://h/db"\npassword_file = "nowhere"\n', None),
    ('url = "postgresql://h/db"\npool_size = 0\n', None),
    ('url = "postgresql://h/db"\npool = 3\n',
     'host[0].storage: unknown key "pool" (did you mean "pool_size"?)'),
    ('url = "postgresql://h/db?sslmode=require"\n',
     "host[0].storage.url: asyncpg takes ?ssl=require (or verify-ca, verify-full, "
     "prefer, disable), not ?sslmode="),
    ('url = "postgresql://h/db"\ntimeout = 0\n',
     "host[0].storage.timeout: expected a number from 0.5 to 300, got 0"),
])
def test_bad_sql_storage(tmp_path: Path, table: str, message: str | None) -> None:
    """Each bad sql key is one line naming it; a password is never shown."""
    got = error(tmp_path, SQL + table)
    assert "hunter2" not in got
    if message is None:
        key = "password_file" if "nowhere" in table else "pool_size"
        assert got.startswith(f"host[0].storage.{key}: ")
    else:
        assert got == message


# -- [http] -------------------------------------------------------------------

def test_http_absent_is_off_and_disabled_is_off(tmp_path: Path) -> None:
    assert load(write(tmp_path, HOST), check_certs=False).http is None
    assert load(write(tmp_path, HOST + "[http]\nenabled = false\n"), check_certs=False).http \
        is None


def test_http_keys_load(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    cfg = load(write(tmp_path, HOST + '[http]\nport = 0\ntls_port = 5281\nweb_root = "www"\n'
                     'trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]\n'
                     'cors_origins = ["https://Chat.Example.com", "*"]\n'
                     'bosh_path = "/bosh"\nwebsocket_path = ""\n'), check_certs=False).http
    assert cfg is not None
    assert (cfg.port, cfg.tls_port, cfg.bosh_path, cfg.websocket_path) == (0, 5281, "/bosh", "")
    assert cfg.web_root == tmp_path / "www"
    assert [str(n) for n in cfg.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    assert cfg.cors_origins == ("https://chat.example.com", "*")


@pytest.mark.parametrize(("body", "message"), [
    ("port = 70000", "http.port: expected an integer from 1 to 65535 (or 0 for off), got 70000"),
    ("port = 5281\ntls_port = 5281", "http.tls_port: must differ from http.port (both are 5281)"),
    ("port = 5222", "http.port: must differ from client.port (both are 5222)"),
    ("port = 0\ntls_port = 5223\n[client]\ndirect_tls_port = 5223",
     "http.tls_port: must differ from client.direct_tls_port (both are 5223)"),
    ('bosh_path = "http-bind"', 'http.bosh_path: expected a URL path such as "/http-bind" (not '
     '"/", not under /.well-known/, no trailing /), or "" for off, got "http-bind"'),
    ('websocket_path = "/http-bind"',
     'http.websocket_path: must differ from http.bosh_path (both are "/http-bind")'),
    ('web_root = "nowhere"', "http.web_root: "),
    ('trusted_proxies = ["proxy.example"]', 'http.trusted_proxies[0]: expected an IP address '
     'or network such as "10.0.0.0/8", got "proxy.example"'),
    ('trusted_proxies = "127.0.0.1"', 'http.trusted_proxies: expected an array of addresses or '
     'networks such as ["127.0.0.1", "10.0.0.0/8"], got "127.0.0.1"'),
    ('cors_origins = ["https://chat.example.com/path"]', 'http.cors_origins[0]: expected "*" '
     'or an origin such as "https://chat.example.com" (scheme, host, optional port; no path), '
     'got "https://chat.example.com/path"'),
    ("bosh_inactivity = 1", "http.bosh_inactivity: expected a number from 5 to 86400, got 1"),
    ("consider_secure = 1", "http.consider_secure: expected true or false, got 1"),
    ("porrt = 1", '[http] unknown key "porrt" (did you mean "port"?)'),
])
def test_bad_http_keys(tmp_path: Path, body: str, message: str) -> None:
    got = error(tmp_path, HOST + f"[http]\n{body}\n")
    assert got.startswith(message) if message.endswith(": ") else got == message


def test_bad_cluster_url(tmp_path: Path) -> None:
    """The cluster URL must be a Redis URL."""
    assert error(tmp_path, HOST + '[cluster]\nurl = "http://localhost"\n') == \
        'cluster.url: expected a URL starting with redis://, rediss:// or unix://, ' \
        'got "http://localhost"'


def test_empty_cluster_table(tmp_path: Path) -> None:
    """An empty [cluster] turns clustering on with the defaults; the node id is
    the host name and the client port."""
    assert load(write(tmp_path, HOST + "[cluster]\n"), check_certs=False).cluster == \
        ClusterConfig(node=f"{socket.gethostname()}-5222")


def test_cluster_keys(tmp_path: Path) -> None:
    """Every [cluster] key is read; numbers become floats where the field is one;
    tls_ca is resolved like certs."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "redis-ca.pem").write_text("x")
    config = load(write(tmp_path, HOST + """
        [cluster]
        url = "rediss://redis.example:6380/2"
        password = "s3cret"
        db = 3
        node = "chat-1.eu_west"
        heartbeat = 2
        dead_after = 6
        route_cache_ttl = 0
        inbox_maxlen = 1000
        tls_ca = "conf/redis-ca.pem"
        """), check_certs=False)
    assert config.cluster == ClusterConfig(
        url="rediss://redis.example:6380/2", password="s3cret", db=3, node="chat-1.eu_west",
        heartbeat=2.0, dead_after=6.0, route_cache_ttl=0.0, inbox_maxlen=1000,
        tls_ca=tmp_path / "conf" / "redis-ca.pem")
    assert isinstance(config.cluster.heartbeat, float)
    assert isinstance(config.cluster.route_cache_ttl, float)
    assert "s3cret" not in repr(config.cluster)


def test_default_node_id_follows_the_client_port(tmp_path: Path) -> None:
    """Without node, the id is default_node_id(client.port)."""
    config = load(write(tmp_path, HOST + "[client]\nport = 5999\n[cluster]\n"),
                  check_certs=False)
    assert config.cluster is not None
    assert config.cluster.node == default_node_id(5999)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@redis:6380/1",
                                 "unix:///run/redis/redis.sock?db=2"])
def test_good_cluster_urls(tmp_path: Path, url: str) -> None:
    """redis://, rediss:// and unix:// URLs are accepted as written."""
    config = load(write(tmp_path, HOST + f'[cluster]\nurl = "{url}"\n'), check_certs=False)
    assert config.cluster is not None and config.cluster.url == url


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("password", '""', "a non-empty string"),
    ("password", "1", "a non-empty string"),
    ("db", "-1", "an integer of at least 0"),
    ("db", '"0"', "an integer of at least 0"),
    ("db", "1.5", "an integer of at least 0"),
    ("node", '""', "1 to 100 characters among A-Z a-z 0-9 . _ -"),
    ("node", '"a b"', "1 to 100 characters among A-Z a-z 0-9 . _ -"),
    ("node", '"a:b"', "1 to 100 characters among A-Z a-z 0-9 . _ -"),
    ("node", '"nœud"', "1 to 100 characters among A-Z a-z 0-9 . _ -"),
    ("node", '"' + "a" * 101 + '"', "1 to 100 characters among A-Z a-z 0-9 . _ -"),
    ("node", "7", "1 to 100 characters among A-Z a-z 0-9 . _ -"),
    ("heartbeat", "0.04", "a number from 0.05 to 10"),
    ("heartbeat", "11", "a number from 0.05 to 10"),
    ("heartbeat", "true", "a number from 0.05 to 10"),
    ("heartbeat", "nan", "a number from 0.05 to 10"),
    ("dead_after", "0.1", "a number from 0.2 to 300"),
    ("dead_after", "301", "a number from 0.2 to 300"),
    ("dead_after", "inf", "a number from 0.2 to 300"),
    ("route_cache_ttl", "-1", "a number from 0 to 3600"),
    ("route_cache_ttl", "3601", "a number from 0 to 3600"),
    ("inbox_maxlen", "999", "an integer of at least 1000"),
    ("inbox_maxlen", "1e5", "an integer of at least 1000"),
    ("wait_replicas", "-1", "an integer from 0 to 100"),
    ("wait_replicas", "101", "an integer from 0 to 100"),
    ("wait_replicas", "1.0", "an integer from 0 to 100"),
    ("wait_replicas", '"1"', "an integer from 0 to 100"),
    ("wait_replicas", "true", "an integer from 0 to 100"),
    ("wait_timeout", "0", "a number from 0.001 to 60"),
    ("wait_timeout", "-1", "a number from 0.001 to 60"),
    ("wait_timeout", "61", "a number from 0.001 to 60"),
    ("wait_timeout", '"1"', "a number from 0.001 to 60"),
    ("wait_timeout", "false", "a number from 0.001 to 60"),
    ("wait_timeout", "nan", "a number from 0.001 to 60"),
])
def test_bad_cluster_values(tmp_path: Path, key: str, value: str, expected: str) -> None:
    """Each [cluster] key rejects a value of the wrong type or out of range."""
    shown = {"1e5": "100000.0"}.get(value, value)
    assert error(tmp_path, HOST + f"[cluster]\n{key} = {value}\n") == \
        f"cluster.{key}: expected {expected}, got {shown}"


@pytest.mark.parametrize(("key", "value"), [
    ("db", "0"), ("db", "15"), ("node", '"a"'), ("node", '"' + "x" * 100 + '"'),
    ("node", '"Host.example-5222_w0"'), ("heartbeat", "0.05"), ("heartbeat", "1"),
    ("dead_after", "300"), ("route_cache_ttl", "0"), ("route_cache_ttl", "3600"),
    ("inbox_maxlen", "1000"), ("inbox_maxlen", "10000000"),
    ("wait_replicas", "0"), ("wait_replicas", "100"), ("wait_timeout", "0.001"),
    ("wait_timeout", "60"),
])
def test_good_cluster_values(tmp_path: Path, key: str, value: str) -> None:
    """The bounds of each [cluster] key are accepted."""
    config = load(write(tmp_path, HOST + f"[cluster]\n{key} = {value}\n"), check_certs=False)
    assert config.cluster is not None
    got = getattr(config.cluster, key)
    assert got == (value.strip('"') if value.startswith('"') else float(value))


def test_heartbeat_at_its_top_needs_a_longer_dead_after(tmp_path: Path) -> None:
    """heartbeat = 10 with dead_after = 30 is the largest consistent pair."""
    config = load(write(tmp_path, HOST + "[cluster]\nheartbeat = 10\ndead_after = 30\n"),
                  check_certs=False)
    assert config.cluster is not None
    assert (config.cluster.heartbeat, config.cluster.dead_after) == (10.0, 30.0)


@pytest.mark.parametrize(("table", "message"), [
    ("heartbeat = 2\n", "cluster.dead_after: must be at least 3 times cluster.heartbeat (6), "
                        "got 5"),
    ("heartbeat = 0.5\ndead_after = 1.4\n",
     "cluster.dead_after: must be at least 3 times cluster.heartbeat (1.5), got 1.4"),
])
def test_dead_after_needs_three_heartbeats(tmp_path: Path, table: str, message: str) -> None:
    """A node must be able to miss two heartbeats before it is declared dead."""
    assert error(tmp_path, HOST + "[cluster]\n" + table) == message


def test_unknown_cluster_key_suggests(tmp_path: Path) -> None:
    """A typo in [cluster] is caught with a suggestion."""
    assert error(tmp_path, HOST + "[cluster]\nheartbeats = 1\n") == \
        '[cluster] unknown key "heartbeats" (did you mean "heartbeat"?)'


def test_tls_ca_must_exist(tmp_path: Path) -> None:
    """tls_ca names an existing file, resolved against the base directory."""
    missing = tmp_path / "conf" / "nope.pem"
    assert error(tmp_path, HOST + '[cluster]\nurl = "rediss://r"\ntls_ca = "conf/nope.pem"\n') \
        == f'cluster.tls_ca: "{missing}" is not a file'
    assert error(tmp_path, HOST + '[cluster]\nurl = "rediss://r"\ntls_ca = ""\n') == \
        'cluster.tls_ca: expected a non-empty string, got ""'


def test_tls_ca_needs_rediss(tmp_path: Path) -> None:
    """A CA file with a plain redis:// URL would silently go unused: refused."""
    (tmp_path / "ca.pem").write_text("x")
    assert error(tmp_path, HOST + f'[cluster]\ntls_ca = "{tmp_path}/ca.pem"\n') == \
        'cluster.tls_ca: only used with a rediss:// url (TLS), but cluster.url is "redis://"'


def test_cluster_errors_never_show_the_password(tmp_path: Path) -> None:
    """An error about the URL of a rediss:// setup does not echo its password."""
    (tmp_path / "ca.pem").write_text("x")
    message = error(tmp_path, HOST + '[cluster]\nurl = "redis://:hunter2@r"\n'
                    f'tls_ca = "{tmp_path}/ca.pem"\n')
    assert "hunter2" not in message


def test_sentinel_keys(tmp_path: Path) -> None:
    """sentinels and service are read together; the URL then gives the db."""
    config = load(write(tmp_path, HOST + '[cluster]\nurl = "redis:///2"\n'
                        'sentinels = ["10.0.0.1:26379", "[::1]:26380"]\nservice = "chat"\n'
                        'sentinel_password = "s"\n'), check_certs=False)
    assert config.cluster is not None
    assert config.cluster.sentinels == ("10.0.0.1:26379", "[::1]:26380")
    assert (config.cluster.service, config.cluster.sentinel_password) == ("chat", "s")


@pytest.mark.parametrize(("table", "message"), [
    ('sentinels = ["h:1"]\n', "cluster.service: required with cluster.sentinels (the name "
     'the Sentinels monitor the primary by, "sentinel monitor NAME ...")'),
    ('service = "x"\n', "cluster.service: only used with cluster.sentinels"),
    ('sentinel_password = "p"\n', "cluster.sentinel_password: only used with cluster.sentinels"),
    ('sentinels = ["nohost"]\nservice = "x"\n',
     'cluster.sentinels[0]: expected "host:port" such as "10.0.0.1:26379", got "nohost"'),
    ('sentinels = ["h:1", "h:1"]\nservice = "x"\n', 'cluster.sentinels[1]: "h:1" is listed twice'),
    ('sentinels = []\nservice = "x"\n', 'cluster.sentinels: expected an array of "host:port" '
     'such as ["10.0.0.1:26379"], got an empty array'),
    ('sentinels = ["h:1"]\nservice = "a b"\n',
     'cluster.service: expected a Sentinel master name (letters, digits, . _ -), got "a b"'),
])
def test_bad_sentinel_keys(tmp_path: Path, table: str, message: str) -> None:
    assert error(tmp_path, HOST + "[cluster]\n" + table) == message


@pytest.mark.parametrize(("table", "replicas"), [
    ("", 0),                                            # one Redis: nothing to wait for
    ('sentinels = ["h:1"]\nservice = "x"\n', 1),      # a primary and its replica
    ('sentinels = ["h:1"]\nservice = "x"\nwait_replicas = 0\n', 0),
    ("wait_replicas = 2\n", 2),
])
def test_wait_replicas_default_follows_sentinels(tmp_path: Path, table: str,
                                                 replicas: int) -> None:
    """Absent, wait_replicas stays None and means 1 with sentinels, else 0;
    wait_timeout is a float (1 s unless set)."""
    config = load(write(tmp_path, HOST + "[cluster]\n" + table + "wait_timeout = 2\n"),
                  check_certs=False)
    assert config.cluster is not None
    assert config.cluster.replicas_to_wait() == replicas
    assert config.cluster.wait_replicas == (None if "wait_replicas" not in table else replicas)
    assert config.cluster.wait_timeout == 2.0 and isinstance(config.cluster.wait_timeout, float)
    assert ClusterConfig().wait_timeout == 1.0


def test_template_documents_every_cluster_key(tmp_path: Path) -> None:
    """conf/config.toml's commented [cluster] block names every key; uncommented
    (the keys that have a default), it loads as exactly those defaults."""
    text = TEMPLATE.read_text()
    block = text[text.index("# [cluster]\n"):]
    keys = re.findall(r"^# (\w+) = ", block, re.M)
    assert sorted(keys) == sorted(f.name for f in fields(ClusterConfig))
    with_default = ("url", "heartbeat", "dead_after", "route_cache_ttl", "inbox_maxlen",
                    "wait_timeout")
    uncommented = re.sub(rf"^# (\[cluster\]|(?:{'|'.join(with_default)}) = )", r"\1",
                         text, flags=re.M)
    config = load(write(tmp_path, uncommented), check_certs=False)
    assert config.cluster == ClusterConfig(node=default_node_id(5222))


def test_reuse_port(tmp_path: Path) -> None:
    """[client] reuse_port is a boolean, false by default."""
    assert load(write(tmp_path, HOST), check_certs=False).client.reuse_port is False
    config = load(write(tmp_path, HOST + "[client]\nreuse_port = true\n"), check_certs=False)
    assert config.client.reuse_port is True
    assert error(tmp_path, HOST + "[client]\nreuse_port = 1\n") == \
        "client.reuse_port: expected true or false, got 1"


# -- certificates --------------------------------------------------------------

def with_certs(tmp_path: Path, pairs: Path, crt: str, key: str) -> Path:
    """A config for wonderland.lit whose certs/ holds copies of the given pair."""
    certs = tmp_path / "conf" / "certs"
    certs.mkdir(parents=True)
    shutil.copy(pairs / crt, certs / "wonderland.lit.crt")
    shutil.copy(pairs / key, certs / "wonderland.lit.key")
    return write(tmp_path, HOST)


def test_certs_ok(tmp_path: Path, pairs: Path) -> None:
    """A matching pair passes the certificate check."""
    path = with_certs(tmp_path, pairs, "a/wonderland.lit.crt", "a/wonderland.lit.key")
    assert load(path).domains == ("wonderland.lit",)


def test_missing_cert(tmp_path: Path) -> None:
    """A missing certificate names the domain, the file and the fix."""
    path = write(tmp_path, HOST)
    with pytest.raises(ConfigError) as info:
        load(path)
    crt = tmp_path / "conf" / "certs" / "wonderland.lit.crt"
    assert str(info.value) == (f'{path}: wonderland.lit: certificate {crt} is missing '
                               f'("vinespy cert wonderland.lit" makes a self-signed one)')


def test_unreadable_key(tmp_path: Path, pairs: Path) -> None:
    """A key that cannot be read names the domain and the file."""
    path = with_certs(tmp_path, pairs, "a/wonderland.lit.crt", "a/wonderland.lit.key")
    key = tmp_path / "conf" / "certs" / "wonderland.lit.key"
    key.unlink()
    key.mkdir()                       # unreadable even for root
    with pytest.raises(ConfigError, match=rf"wonderland\.lit: cannot read private key {key}: "):
        load(path)


def test_garbage_cert(tmp_path: Path, pairs: Path) -> None:
    """A certificate file without PEM is refused."""
    path = with_certs(tmp_path, pairs, "a/wonderland.lit.crt", "a/wonderland.lit.key")
    (tmp_path / "conf" / "certs" / "wonderland.lit.crt").write_text("garbage\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        load(path)


def test_garbage_key(tmp_path: Path, pairs: Path) -> None:
    """A key file without PEM is refused."""
    path = with_certs(tmp_path, pairs, "a/wonderland.lit.crt", "a/wonderland.lit.key")
    (tmp_path / "conf" / "certs" / "wonderland.lit.key").write_text("garbage\n")
    with pytest.raises(ConfigError, match="holds no PEM private key"):
        load(path)


def test_mismatched_key(tmp_path: Path, pairs: Path) -> None:
    """A key from another pair is refused, naming both files."""
    path = with_certs(tmp_path, pairs, "a/wonderland.lit.crt", "b/wonderland.lit.key")
    with pytest.raises(ConfigError, match="does not belong to certificate"):
        load(path)


def test_cert_for_other_domain(tmp_path: Path, pairs: Path) -> None:
    """A certificate that does not name the domain is refused, listing its names."""
    path = with_certs(tmp_path, pairs, "a/other.lit.crt", "a/other.lit.key")
    with pytest.raises(ConfigError, match=r"does not name wonderland\.lit "
                                          r"\(it names: other\.lit, \*\.other\.lit\)"):
        load(path)


def test_module_options(tmp_path: Path) -> None:
    """[host.options.MODULE] values reach the host config, typed."""
    config = load(write(tmp_path, HOST + "[host.options.offline]\nmax_messages = 7\n"
                        "[host.options.vcard]\nmax_size = 4096\n"), check_certs=False)
    assert config.hosts[0].options == {"offline": {"max_messages": 7},
                                       "vcard": {"max_size": 4096}}


@pytest.mark.parametrize("table,message", [
    ("[host.options.ofline]\nmax_messages = 7\n",
     'host[0].options: unknown module "ofline" (did you mean "offline"?)'),
    ("[host.options.offline]\nmax_mesages = 7\n",
     'host[0].options.offline: unknown option "max_mesages" (did you mean "max_messages"?)'),
    ("[host.options.offline]\nmax_messages = 0\n",
     "host[0].options.offline.max_messages: expected an integer from 1 to 10000, got 0"),
    ("[host.options.offline]\nmax_messages = true\n",
     "host[0].options.offline.max_messages: expected an integer from 1 to 10000, got true"),
])
def test_module_option_errors(tmp_path: Path, table: str, message: str) -> None:
    """Unknown modules and options get a suggestion; values are checked against
    the module's declared bounds."""
    assert error(tmp_path, HOST + table) == message


def test_module_option_choices(tmp_path: Path) -> None:
    """An Option with choices (mam's default) takes one of them; anything
    else is one line naming the option and the choices."""
    config = load(write(tmp_path, HOST + '[host.options.mam]\ndefault = "roster"\n'
                        "retention_days = 30\nmax_messages = 5000\n"), check_certs=False)
    assert config.hosts[0].options == {"mam": {"default": "roster", "retention_days": 30,
                                               "max_messages": 5000}}
    assert error(tmp_path, HOST + '[host.options.mam]\ndefault = "sometimes"\n') == \
        'host[0].options.mam.default: expected one of "always", "never", "roster", ' \
        'got "sometimes"'
    assert error(tmp_path, HOST + "[host.options.mam]\ndefault = 1\n") == \
        'host[0].options.mam.default: expected one of "always", "never", "roster", got 1'
    assert error(tmp_path, HOST + "[host.options.mam]\nretention_days = -1\n") == \
        "host[0].options.mam.retention_days: expected an integer from 0 to 100000, got -1"


# -- [component] --------------------------------------------------------------

def test_component_keys_and_domains(tmp_path: Path) -> None:
    """[component] keys load; each host domain gets each declared component."""
    cfg = load(write(tmp_path, '[[host]]\ndomains = ["wonderland.lit", "verona.lit"]\n'
                     'components = { tea = "s1", coffee = "s2" }\n'
                     '[component]\nport = 0\nmax_stanza_size = 100000\n'
                     'handshake_timeout = 5\nsend_timeout = 10\n'), check_certs=False)
    assert (cfg.component.port, cfg.component.max_stanza_size, cfg.component.handshake_timeout,
            cfg.component.send_timeout, cfg.component.enabled) == (0, 100000, 5.0, 10.0, True)
    assert cfg.component_secrets() == {
        "tea.wonderland.lit": "s1", "coffee.wonderland.lit": "s2",
        "tea.verona.lit": "s1", "coffee.verona.lit": "s2"}


@pytest.mark.parametrize(("body", "message"), [
    ("secret = 1", '[component] unknown key "secret"'),
    ("port = 70000",
     "component.port: expected an integer from 1 to 65535 (or 0 for any free port), got 70000"),
    ("max_stanza_size = 100",
     "component.max_stanza_size: expected an integer from 10000 to 16777216, got 100"),
    ("handshake_timeout = 0", "component.handshake_timeout: expected a number from 1 to 3600, "
                              "got 0"),
])
def test_bad_component_keys(tmp_path: Path, body: str, message: str) -> None:
    """Each bad [component] key is one line naming it."""
    assert error(tmp_path, HOST + f"[component]\n{body}\n") == message


def test_server_section(tmp_path: Path) -> None:
    """[server]: routes as "host:port" per domain (prepared), insecure
    domains, a CA file that exists; defaults otherwise."""
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "ca.pem").write_text("x")
    path = write(tmp_path, HOST + '[server]\nenabled = true\nport = 5269\n'
                 'routes = { "Partner.Example" = "10.0.0.7:5270", "v6.example" = "[::1]:5269" }\n'
                 'insecure_domains = ["self.example"]\nca_file = "conf/ca.pem"\n')
    cfg = load(path, check_certs=False).server
    assert cfg.enabled and cfg.port == 5269 and cfg.tls == "required" and cfg.dialback
    assert cfg.routes == {"partner.example": ("10.0.0.7", 5270), "v6.example": ("::1", 5269)}
    assert cfg.insecure_domains == ("self.example",)
    assert cfg.ca_file == tmp_path / "conf" / "ca.pem"


@pytest.mark.parametrize("body, message", [
    ('routes = { "a.example" = "10.0.0.7" }',
     'server.routes.a.example: expected "host:port" such as "10.0.0.7:5269", got "10.0.0.7"'),
    ('routes = { "a.example" = "h:70000" }',
     'server.routes.a.example: expected "host:port" such as "10.0.0.7:5269", got "h:70000"'),
    ('insecure_domains = ["ok.example", "ok.example"]',
     'server.insecure_domains[1]: "ok.example" is listed twice'),
    ('tls = "maybe"', 'server.tls: expected one of "required", "optional", got "maybe"'),
    ('connect_timeout = 0', "server.connect_timeout: expected a number from 0.1 to 300, got 0"),
    ('direct_tls_port = 5269', "server.direct_tls_port: must differ from server.port "
                               "(both are 5269)"),
    ('ca_file = "nowhere.pem"', None),
    ('enabled = true\nport = 5222', "server.port: 5222 is client.port already"),
    ('dialback_secret = ""', 'server.dialback_secret: expected a non-empty string, got ""'),
    ('colour = "blue"', None),
])
def test_server_section_errors(tmp_path: Path, body: str, message: str | None) -> None:
    got = error(tmp_path, HOST + "[server]\n" + body + "\n")
    if message is not None:
        assert got == message
    else:
        assert got.startswith(("server.ca_file:", "[server] unknown key")), got
