"""The store layer: the only code that writes SQL.

One module per concept (usage, forecasts, plans, journal, ...). Every function takes an
SQLAlchemy ``Engine`` or ``Connection`` and returns frozen value objects, never rows.
"""
