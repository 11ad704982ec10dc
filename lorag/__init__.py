"""The lorag command line (`lorag ...`): the top of the dependency graph; see lorag/cli.py."""
