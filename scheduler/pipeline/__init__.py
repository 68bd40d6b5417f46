"""The steps every entry point shares: stored usage to histories to forecasts
(:mod:`.forecast`) and forecasts to plans (:mod:`.plan`). I/O is allowed here; policy is not:
every decision is made by the pure :mod:`scheduler.planning` and :mod:`forecasting` packages.
"""
