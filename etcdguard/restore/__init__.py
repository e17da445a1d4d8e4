"""Guided restore: diagnose, recommend, plan and run a journaled, crash-safe etcd restore."""
