"""Each benchmark's tests start its script in a subprocess (torch, Lightning and often transformers imported each
time), seconds to a minute per test: they run with the slow tests (``python -m pytest -m slow``, which CI runs),
all but test_table.py, which keeps docs/benchmarks.md what the records give and takes a second."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m 'not slow' deselects
def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.parent == HERE and item.path.name != "test_table.py":
            item.add_marker(pytest.mark.slow)
