"""The ``zonemount`` command line: one console script, one subcommand per product part."""
