"""The forecasting model family: one narrow interface, several classical models.

Every model is a small frozen object with ``fit(y, periods) -> FittedSeries``; a fitted
series gives ``forecast(h) -> (h,) mean``. Inputs are a gap-free 1-D float array on a
regular grid (the caller fills missing steps, see :func:`forecasting.select`) and the
seasonal periods in steps (daily first, then weekly). Models never read a clock, a file or
the network. Intervals are not produced here: :mod:`forecasting.select` calibrates them on
each model's own rolling-origin errors, which is honest for every member alike (the
statsmodels analytic intervals assume the model is right; on M4 Hourly they under-cover).

Members and their sources:

* :class:`SeasonalNaive` - the floor: ``y[t] = y[t - m]``.
* :class:`HoltWinters` - additive/multiplicative Holt-Winters exponential smoothing
  (statsmodels ``ExponentialSmoothing``; Hyndman & Athanasopoulos, *FPP3* ch. 8).
* :class:`Theta` - the Theta method of Assimakopoulos & Nikolopoulos (2000) on the
  multiplicatively deseasonalised series (statsmodels ``ThetaModel``; the M3 winner).
* :class:`MSTLModel` - MSTL (Bandara, Hyndman & Bergmeir 2021) decomposition into daily
  and weekly seasonal components, the seasonal part forecast by seasonal naive and the
  seasonally adjusted part by damped Holt (ETS(A,Ad,N)) or an ARIMA.
* :class:`Sarimax` - SARIMA(1,0,1)(0,1,1)_m (statsmodels ``SARIMAX``), for short series
  only: its state space has ``m + 2`` states, which is slow beyond a few hundred steps.
* :class:`Harmonic` - the batched harmonic model of :mod:`forecasting._model` (the fast
  minute-level path), wrapped in the same interface.
"""

from .base import FittedSeries, SeriesModel, fill_missing
from .statistical import Harmonic, HoltWinters, MSTLModel, Sarimax, SeasonalNaive, Theta

__all__ = [
    "FittedSeries",
    "Harmonic",
    "HoltWinters",
    "MSTLModel",
    "Sarimax",
    "SeasonalNaive",
    "SeriesModel",
    "Theta",
    "fill_missing",
]
