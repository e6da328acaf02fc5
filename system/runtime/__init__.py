"""The local runtime: real Kafka, Jaeger, Prometheus, Toxiproxy and Envoy as supervised processes.

Dependencies flow one way: ``topology`` (what runs, on which ports) feeds the config
generators in ``config/``, which feed ``components`` (how each process is started and
probed), which feeds the ``supervisor``. ``bootstrap`` installs the programs they need.
"""
