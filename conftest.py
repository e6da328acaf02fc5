"""The harness's pytest plugin for every suite of this repository (tests, contracts,
scenarios): see ``harness/pytest_plugin``."""

from harness.pytest_plugin import PLUGINS

pytest_plugins = PLUGINS
