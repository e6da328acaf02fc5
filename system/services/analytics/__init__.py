"""analytics: a projection of the event log, rebuildable from offset 0 of the topics."""
