"""The contract suite: every service's OpenAPI schema fuzzed by schemathesis (stateless
and stateful), and the event contracts of the Kafka messages.

Two modes, the same tests (``--contract-target`` / ``HARNESS_CONTRACT_MODE``):

* ``in-process`` (default, every CI run): each service's Litestar app in the test process
  on its own temporary SQLite database, real RS256 tokens, the in-process mesh;
* ``live``: the running system through its gateway (``harness.target.resolve()``).
"""
