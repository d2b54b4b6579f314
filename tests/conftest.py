"""pytest settings of the suite: the `slow` marker (shared helpers live in helpers.py)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes on 2 CPU cores (still run by `make test`)")
