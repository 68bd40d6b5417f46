"""The members of the model family (see the package docstring for sources)."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._model import FittedModel
from .._time import CalendarDay, FloatArray


def _finite_or(fc: FloatArray, fallback: FloatArray) -> FloatArray:
    fc = np.asarray(fc, dtype=np.float64)
    return np.where(np.isfinite(fc), fc, fallback)


def _snaive(y: FloatArray, m: int, h: int) -> FloatArray:
    m = max(1, min(m, y.size))
    return np.resize(y[-m:], h).astype(np.float64)


@dataclass(frozen=True)
class _Values:
    values: FloatArray

    def forecast(self, h: int) -> FloatArray:
        return np.resize(self.values, h) if self.values.size else np.zeros(h)


@dataclass(frozen=True)
class SeasonalNaive:
    """``y[t + k] = y[t + k - m]`` with ``m`` the ``which``-th period (0 daily, 1 weekly)."""

    which: int = 0

    @property
    def name(self) -> str:
        return ("seasonal-naive-daily", "seasonal-naive-weekly")[self.which]

    def usable(self, n: int, periods: tuple[int, ...]) -> bool:
        return len(periods) > self.which and n >= periods[self.which]

    def fit(self, y: FloatArray, periods: tuple[int, ...]) -> _Values:
        m = periods[self.which]
        return _Values(np.asarray(y[-m:], dtype=np.float64).copy())


@dataclass(frozen=True)
class _Callable:
    mean: FloatArray  # forecast of max_h steps, longer ones repeat the last period
    period: int

    def forecast(self, h: int) -> FloatArray:
        if h <= self.mean.size:
            return self.mean[:h].copy()
        extra = _snaive(self.mean, self.period, h - self.mean.size)
        return np.concatenate([self.mean, extra])


@dataclass(frozen=True)
class HoltWinters:
    """Holt-Winters with a daily season (statsmodels ``ExponentialSmoothing``).

    ``seasonal`` is ``"add"`` or ``"mul"`` (multiplicative needs a positive series; it is
    skipped otherwise); ``damped`` adds a damped additive trend. Initial states use the
    heuristic of Hyndman et al. (2008) so that only the smoothing weights are optimised
    (estimating 24+ initial states makes a fit 20x slower and no better out of sample).
    """

    seasonal: str = "add"
    damped: bool = False
    max_h: int = 2880

    @property
    def name(self) -> str:
        return f"ets-{self.seasonal}" + ("-damped" if self.damped else "")

    def usable(self, n: int, periods: tuple[int, ...]) -> bool:
        return bool(periods) and 2 <= periods[0] <= 288 and n >= 3 * periods[0]

    def fit(self, y: FloatArray, periods: tuple[int, ...]) -> _Callable:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        m = periods[0]
        season = self.seasonal
        if season == "mul" and not np.all(y > 0):
            season = "add"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ExponentialSmoothing(
                y, trend="add" if self.damped else None, damped_trend=self.damped,
                seasonal=season, seasonal_periods=m, initialization_method="heuristic",
            ).fit()
            h = min(self.max_h, 2 * m)
            fc = _finite_or(res.forecast(h), _snaive(y, m, h))
        return _Callable(fc, m)


@dataclass(frozen=True)
class Theta:
    """The Theta method with multiplicative deseasonalisation at the daily period.

    The SES part is fitted by least squares (``use_mle=False``): the state-space MLE gives
    the same forecasts here at ten times the cost.
    """

    @property
    def name(self) -> str:
        return "theta"

    def usable(self, n: int, periods: tuple[int, ...]) -> bool:
        return bool(periods) and periods[0] >= 2 and n >= 3 * periods[0]

    def fit(self, y: FloatArray, periods: tuple[int, ...]) -> _Callable:
        from statsmodels.tsa.forecasting.theta import ThetaModel

        m = periods[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            positive = bool(np.all(y > 0))
            res = ThetaModel(y, period=m, deseasonalize=True,
                             method="auto" if positive else "additive").fit(use_mle=False)
            fc = _finite_or(np.asarray(res.forecast(2 * m)), _snaive(y, m, 2 * m))
        return _Callable(fc, m)


@dataclass(frozen=True)
class _Decomposed:
    seasonal: FloatArray  # (n_last_week,) sum of the seasonal components' last cycles
    adjusted: FloatArray  # forecast of the seasonally adjusted part, max_h steps
    periods: tuple[int, ...]
    season_tails: tuple[FloatArray, ...]

    def forecast(self, h: int) -> FloatArray:
        adj = (self.adjusted[:h] if h <= self.adjusted.size else np.concatenate(
            [self.adjusted, np.full(h - self.adjusted.size, self.adjusted[-1])]))
        total = adj.copy()
        for tail in self.season_tails:
            total += np.resize(tail, h)
        return total


@dataclass(frozen=True)
class MSTLModel:
    """MSTL on the daily (and, with two weeks of data, weekly) periods; the seasonal
    components are continued by seasonal naive, the adjusted series by ``remainder``:
    ``"ets"`` damped Holt, ``"arima"`` ARIMA(1,1,1), or ``"naive"`` its last value.
    """

    remainder: str = "ets"
    max_h: int = 2880

    @property
    def name(self) -> str:
        return f"mstl-{self.remainder}"

    def usable(self, n: int, periods: tuple[int, ...]) -> bool:
        return bool(periods) and 2 <= periods[0] <= 288 and n >= 3 * periods[0]

    def fit(self, y: FloatArray, periods: tuple[int, ...]) -> _Decomposed:
        from statsmodels.tsa.seasonal import MSTL

        use = tuple(p for p in periods if p >= 2 and y.size >= 2 * p + 1)[:2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = MSTL(y, periods=use if len(use) > 1 else use[0]).fit()
            seas = np.asarray(res.seasonal, dtype=np.float64).reshape(y.size, -1)
            adjusted = y - seas.sum(axis=1)
            h = min(self.max_h, 2 * max(use))
            if self.remainder == "ets":
                from statsmodels.tsa.holtwinters import ExponentialSmoothing

                fc = ExponentialSmoothing(adjusted, trend="add", damped_trend=True,
                                          initialization_method="heuristic").fit().forecast(h)
            elif self.remainder == "arima":
                from statsmodels.tsa.arima.model import ARIMA

                fc = ARIMA(adjusted[-min(adjusted.size, 10 * use[0]):],
                           order=(1, 1, 1)).fit().forecast(h)
            else:
                fc = np.full(h, adjusted[-1])
        fc = _finite_or(np.asarray(fc), np.full(h, adjusted[-1]))
        tails = tuple(seas[-p:, j].copy() for j, p in enumerate(use))
        return _Decomposed(seas[-1], fc, use, tails)


@dataclass(frozen=True)
class Sarimax:
    """SARIMA(1,0,1)(0,1,1)_m with a drift-free seasonal difference; short series only."""

    max_steps: int = 24 * 21

    @property
    def name(self) -> str:
        return "sarimax"

    def usable(self, n: int, periods: tuple[int, ...]) -> bool:
        return bool(periods) and 2 <= periods[0] <= 48 and 3 * periods[0] <= n <= self.max_steps

    def fit(self, y: FloatArray, periods: tuple[int, ...]) -> _Callable:
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        m = periods[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The seasonal difference is taken before the state-space fit
            # (simple_differencing): the same SARMA on y_t - y_{t-m} with m fewer states,
            # about 4x faster (1.1 s -> 0.3 s on 10 days of hours), and the selection fits
            # it at up to ten origins. Forecasts are integrated back below.
            res = SARIMAX(y, order=(1, 0, 1), seasonal_order=(0, 1, 1, m),
                          simple_differencing=True).fit(disp=False)
            d = np.asarray(res.forecast(2 * m), dtype=np.float64)
        fc = np.empty(2 * m)
        for k in range(2 * m):
            fc[k] = d[k] + (y[y.size - m + k] if k < m else fc[k - m])
        return _Callable(_finite_or(fc, _snaive(y, m, 2 * m)), m)


@dataclass(frozen=True)
class Harmonic:
    """The fast path (:func:`forecasting.fit`) behind the family interface.

    ``start`` is the wall-clock time of ``y[0]`` on the grid the caller uses (the selection
    passes local wall time, so the model's own time zone is UTC), ``step_minutes`` its step.
    """

    step_minutes: float
    start: dt.datetime | None = None
    calendar: tuple[CalendarDay, ...] = field(default=())

    @property
    def name(self) -> str:
        return "harmonic"

    def usable(self, n: int, periods: tuple[int, ...]) -> bool:
        return n >= 2

    def fit(self, y: FloatArray, periods: tuple[int, ...]) -> _HarmonicFit:
        return self._fit(y, calibrate=True)

    def fit_mean(self, y: FloatArray, periods: tuple[int, ...]) -> _HarmonicFit:
        """``fit`` without the quantile calibration: the same mean forecast at about two
        thirds of the cost (validation scores only the mean)."""
        return self._fit(y, calibrate=False)

    def _fit(self, y: FloatArray, *, calibrate: bool) -> _HarmonicFit:
        from .._model import fit

        return _HarmonicFit(fit(y, step_minutes=self.step_minutes, start=self.start,
                                calendar=self.calendar or None, zero_gap_minutes=0,
                                _calibrate=calibrate), y)


@dataclass(frozen=True, eq=False)
class _HarmonicFit:
    model: FittedModel
    y: FloatArray

    def forecast(self, h: int) -> FloatArray:
        return np.asarray(self.model.predict(self.y, origin=self.y.size, horizon=h).mean)
