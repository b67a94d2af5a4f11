"""Fixtures of the integration tests beyond tests/conftest.py's."""

from tests.ldapproc import slapd  # noqa: F401  (a fixture: a real slapd per test)
