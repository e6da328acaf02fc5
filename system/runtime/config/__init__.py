"""Config generators: pure functions from a :class:`~system.runtime.topology.Topology` to
the files each component reads. No I/O here but :func:`write_all`'s."""
