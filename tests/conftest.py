"""The test suite's fixtures live in tests/support, one plugin per kind of test object."""

pytest_plugins = [
    "tests.support.caches",
    "tests.support.postgres",
    "tests.support.redis",
    "tests.support.service",
]
