"""The subcommands of ``pixperfect``, one module per group: each holds its commands' options,
help texts, examples and handlers. :mod:`pixperfect.cli` puts them together and runs one.

``common`` (what every command shares), ``runs`` (train, simulate, preflight, config),
``evaluate``, ``refine`` (refine, export) and ``shards`` (shards build, shards verify).
"""
