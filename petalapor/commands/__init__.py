"""Subcommands of the ``petalapor`` console script, one module per area."""
