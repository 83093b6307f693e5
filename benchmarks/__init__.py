"""Benchmarks of pam_teleport_audit: `benchmarks/run` runs them all (root, Debian 12 or 13)."""
