"""Shared pytest setup. Fixture modules live in tests/support/ and are loaded as plugins."""

pytest_plugins = ["tests.support.kube_fixture"]
