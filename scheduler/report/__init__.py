"""The savings report (#13): what a backtest or a deployment's live history cost, drawn.

``data`` gathers one :class:`~scheduler.report.data.ReportData` from a backtest output
directory (files only) or from the store (a deployment's ledger, usage, commitments,
actions and ``cost_day``); ``render`` draws it with matplotlib into one self-contained HTML
file (PNG figures inlined as data URIs: nothing is fetched when it is viewed) or one
summary PNG. The wing sits under ``cli`` and over ``daemon`` in the import order.
"""
