"""The harness's pytest plugin, one module per capability (like pytest's own plugins).

Enable it with ``pytest_plugins = harness.pytest_plugin.PLUGINS`` in a root ``conftest.py``
(this repository does). Fixtures: ``target``, ``api``, ``admin``, ``customer`` (system),
``invariants`` (invariants), ``jaeger``, ``metrics`` (observability), ``faults`` (faults).
"""

PLUGINS = [
    "harness.pytest_plugin.system",
    "harness.pytest_plugin.invariants",
    "harness.pytest_plugin.observability",
    "harness.pytest_plugin.faults",
]
