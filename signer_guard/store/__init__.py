"""HWM and fence stores: SQLite (one host) and etcd (several hosts)."""
