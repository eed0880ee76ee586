"""Shared fixtures."""

import sys

import pytest
import torch


@pytest.fixture(autouse=True)
def clean_registry():
    """Snapshot and restore the task registry and the plugin modules around every test: a test that loads the
    plugins/ folder (a fit from the repository) must not leave its tasks registered for the next."""
    from lmtemplate import registry

    registry.load_builtin()  # built-ins register on first import only: before the snapshot

    tasks, sources = dict(registry._TASKS), set(registry._loaded_sources)
    modules = {k: v for k, v in sys.modules.items() if k.startswith("lmtemplate_plugins.")}
    yield registry
    registry._TASKS.clear()
    registry._TASKS.update(tasks)
    registry._loaded_sources.clear()
    registry._loaded_sources.update(sources)
    registry._loading.clear()
    for k in [k for k in sys.modules if k.startswith("lmtemplate_plugins.")]:
        del sys.modules[k]
    sys.modules.update(modules)


@pytest.fixture
def one_thread():
    """Run on one intra-op thread: tiny matmuls gain nothing from more, and they stall on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
