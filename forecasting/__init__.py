"""capsched forecasting: pure, batched demand forecasts with honest quantiles.

Entry point::

    import forecasting

    fc = forecasting.forecast(history, step_minutes=1, horizon=300, quantiles=(0.5, 0.9),
                              start=start_utc, timezone="Europe/Berlin")
    fc.mean            # (horizon,) point forecast, never negative
    fc.quantile(0.9)   # (horizon,) for each requested quantile (KeyError otherwise)
    fc.accuracy        # out-of-sample coverage and error of this model, JSON-serialisable

    # The daemon's loop: refit everything together, then predict cheaply every minute.
    models = forecasting.fit_batch(histories, step_minutes=1, starts=starts,
                                   timezones=zones, calendars=calendars)
    fc = models[i].predict(recent, origin=now_utc, horizon=300)

``history`` is a 1-D float array on a regular grid; NaN means missing (never read as
zero); ``start`` is the tz-aware timestamp of ``history[0]``. Daily and weekly cycles
follow local time in ``timezone``, so a peak stays at its local hour across
daylight-saving changes. ``calendar`` lists exceptional local days
(``CalendarDay(date, like_weekday=None, multiplier=1.0)``), used both to read the
history and to shape the forecast. Runs of at least ``zero_gap_minutes`` exact zeros
where load is expected are treated as logging gaps (0 disables).

``forecast`` (and ``forecast_batch``) choose a model per series by rolling-origin
validation on grids of 15 minutes or more (``select_forecast``: statsmodels exponential
smoothing, Theta, MSTL, SARIMA, seasonal naive and the harmonic model, or an equal-weight
combination) and use the fast harmonic path on finer grids; ``method="choice"`` or
``method="fast"`` forces one (``uses_model_choice``). ``fast_forecast`` is the fast path
alone.

The fast path (chosen by measurement, see the bench script): a linear harmonic regression
(Fourier terms of the local time of day, and of the local week once two weeks are
observed) fitted by weighted least squares for all series at once on one shared design
matrix, with recent weeks weighted more; a robust linear trend (a batched Huber
M-regression on daily medians, numerically the statsmodels RLM(HuberT) fit, kept only
when its t-test is significant and both halves of the history agree); a direct
multi-horizon residual model that maps the current deviation from the profile (last
minute, 10 minutes, hour, 6 hours) to each horizon, which is what lets ``predict`` follow
a burst or a level shift between refits; and, for horizons beyond two hours, a fixed
combination with the seasonal-naive components (the deviation from the profile around
the same local minute yesterday and last week; their weight grows to one half at one
day), read from the history stored in the model, so a short ``recent`` suffices.
Quantiles come from the model's own errors on the held-out tail of the history (split
conformal: the profile and residual model are refitted without the tail), by horizon and
scaled by the expected load, at finite-sample conformal levels computed from the
effective number of independent errors (errors of nearby origins are counted as one in
proportion to their correlation), which keeps the intervals honest on short holdouts.
Cold start: under a day of history the forecast is the recent level; under two weeks
only the daily cycle is fitted. With no observation at
all the forecast is NaN (callers should then hold capacity). ``fit_batch`` fits chunks
of series on one thread per core with single-threaded BLAS (threadpoolctl).

``rolling_origin_eval`` measures a series' MAE against the weekly (or daily) seasonal
naive, pinball loss and interval coverage; ``mask_suspected_gaps``, ``gap_mask`` and
``zero_run_is_gap`` expose the gap rule (zeros that last ``ZERO_LOAD_AFTER_MINUTES`` are
load), ``evidence_level`` the demand level a term commitment may rest on.
"""

from ._gaps import (
    ZERO_LOAD_AFTER_MINUTES,
    evidence_level,
    gap_mask,
    mask_suspected_gaps,
    sustained_zeros,
    zero_run_is_gap,
)
from ._model import FittedModel, Forecast, fast_forecast, fast_forecast_batch, fit, fit_batch
from ._time import CalendarDay
from .evaluation import EvalReport, HorizonScore, rolling_origin_eval
from .select import (
    Choice,
    default_family,
    forecast,
    forecast_batch,
    select_forecast,
    uses_model_choice,
)

__all__ = [
    "ZERO_LOAD_AFTER_MINUTES",
    "CalendarDay",
    "Choice",
    "EvalReport",
    "FittedModel",
    "Forecast",
    "HorizonScore",
    "default_family",
    "evidence_level",
    "fast_forecast",
    "fast_forecast_batch",
    "fit",
    "fit_batch",
    "forecast",
    "forecast_batch",
    "gap_mask",
    "mask_suspected_gaps",
    "rolling_origin_eval",
    "select_forecast",
    "sustained_zeros",
    "uses_model_choice",
    "zero_run_is_gap",
]
