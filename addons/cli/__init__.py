"""Command-line tools behind ./run.sh: approvals, export, replay, verify, keys, certs."""
