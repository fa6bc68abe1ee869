"""Subcommands of the `cxrbox` CLI, one module each (see `cxrbox.cli`)."""
