"""Experiments as commands.  Each module exposes ``run(...)`` writing run directories and a
summary, and is reachable from ``bfclab``'s command line."""
