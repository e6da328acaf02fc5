"""The system under test: the services, their shared chassis and the local runtime.

Nothing in this package imports from ``harness`` or from any suite.
"""
