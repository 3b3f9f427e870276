"""The embedded SQLite store: the default backend, one file, WAL mode, group commit."""
