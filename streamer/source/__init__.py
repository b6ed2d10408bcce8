"""Where changes come from: the replication stream, its decoder and the initial snapshot."""
