"""The ``capsched`` command line: :mod:`.main` (parser, global options, ingest, status, db),
:mod:`.forecast`, :mod:`.plan` (plan, backtest) and :mod:`.run` (the daemon, health, pause).

The top wing: it may import every other wing, and nothing imports it.
"""
