"""The backup engine: chain runner, sources, snapshots, retention and schedule math."""
