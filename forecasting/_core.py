"""Batched model fitting: harmonic regression, robust trend, direct residual model, calibration.

Every array here is in "scaled, calendar-adjusted" units: the raw value divided by the
calendar multiplier of its local day and by the series' typical level (median positive
value), so one set of thresholds and ridge penalties serves series of any magnitude.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ._time import MINUTES_PER_DAY, FloatArray, IntArray


@dataclass(frozen=True)
class Config:
    daily_harmonics: int = 12
    weekly_harmonics: int = 6
    # Recency weighting of the seasonal regression; the profile drifts slowly and
    # recent weeks describe the next one better than old ones.
    halflife_days: float | None = 7.0
    daily_min_days: float = 1.0
    weekly_min_days: float = 14.0
    feature_windows_minutes: tuple[float, ...] = (1.0, 10.0, 60.0, 360.0)
    # Seasonal-naive components: the residual at the same local minute one day and one
    # week before the target (the lag is rounded up to whole seasons for long horizons),
    # as the point value and as a mean over +- lag_window_minutes.
    lag_days: tuple[float, ...] = (1.0, 7.0)
    lag_window_minutes: float = 30.0
    # Fixed combination of the model with the seasonal lags (see blend_weights).
    blend_from_minutes: float = 120.0
    blend_max_weight: float = 0.5
    # Coefficients and error quantiles are fitted at these horizons and interpolated in
    # log(horizon) between them.
    horizon_grid_minutes: tuple[float, ...] = (
        1, 2, 3, 5, 7, 10, 15, 30, 60, 120, 240, 480, 900, 1440,
    )
    residual_fit_days: float = 7.0
    # Origins are sampled with a stride co-prime to 10 so that data published in
    # 10-minute blocks is not always cut at the same place within a block.
    origin_stride_minutes: float = 7.0
    # The held-out tail the quantiles are calibrated on (at most calibration_fraction of
    # the history). 5 days rather than 3: a one-day horizon is scored from the tail's
    # first days only, and at 3 days its errors came from about two independent days.
    # ServeGen, origins on every window boundary after the first week (bench/
    # coverage_blocks.py): 80 % coverage at 60 min 0.808 / 0.849 / 0.831 -> 0.815 / 0.820 /
    # 0.818 (m-small / m-mid / m-large); the scenario suite is unchanged or cheaper.
    calibration_days: float = 5.0
    calibration_fraction: float = 1.0 / 3.0
    min_trend_days: int = 10
    trend_pvalue: float = 0.01
    residual_ridge: float = 1e-2
    level_floor: float = 0.05
    # Lasting level changes and one-off outlier days (see level_change, outlier_days):
    # a change is believed when the hours since it sit, nearly all of them, on the far
    # side of the midpoint between the old and the new level, the new level is at least
    # level_min_ratio away and level_sd_factor robust SDs of the hourly noise; a day is an
    # outlier when its level is outlier_min_ratio away from the usual one (and from the
    # same weekday's) and level_sd_factor + 1 robust SDs of the day-to-day spread.
    level_min_ratio: float = 1.25
    level_sd_factor: float = 3.0
    level_min_post_hours: int = 3
    # The refit rescales the whole history on a change (every horizon, commitments too),
    # so it waits for more than a day of the new level (a one-off day that has just ended
    # is not one); forecasts (recent_level) follow from level_min_post_hours on.
    level_fit_min_post_hours: int = 30
    level_min_pre_hours: int = 24
    level_search_days: float = 14.0
    level_consistency: float = 0.8
    outlier_min_ratio: float = 1.5
    min_errors: int = 20
    scale_by_forecast: bool = True
    interval_levels: tuple[float, ...] = (0.025, 0.1, 0.9, 0.975)
    # Data published in blocks (forecasting._calibration.block_structure, e.g. ServeGen's
    # 10-minute windows): a second residual model fitted (Huber-weighted) from the block
    # boundaries alone, used by predict for origins on a boundary, where nothing of the
    # next block is known yet (fit_core's ``blocks``, _fit_block_residual_model); the
    # calibration scores boundary origins with the same model. Series without blocks are
    # unaffected. ServeGen, boundary origins every 180 min: relMAE at 1 h 0.446 -> 0.428
    # (m-small), 0.627 -> 0.599 (m-mid), 0.455 -> 0.447 (m-large).
    block_boundary_model: bool = True


DEFAULT = Config()
REPORT_HORIZONS_MINUTES = (5.0, 15.0, 60.0, 240.0, 1440.0)


def steps_for(minutes: float, step_minutes: float) -> int:
    return max(1, round(minutes / step_minutes))


def horizon_grid(cfg: Config, step_minutes: float) -> IntArray:
    return np.unique(
        np.array([steps_for(m, step_minutes) for m in cfg.horizon_grid_minutes], dtype=np.int64)
    )


def feature_windows(cfg: Config, step_minutes: float) -> IntArray:
    return np.array(
        [steps_for(m, step_minutes) for m in cfg.feature_windows_minutes], dtype=np.int64
    )


def default_beta(cfg: Config) -> FloatArray:
    """Without enough data to fit the residual model, carry the last hour's level forward."""
    w = np.asarray(cfg.feature_windows_minutes)
    beta = np.zeros(w.size)
    beta[int(np.argmin(np.abs(w - 60.0)))] = 1.0
    return beta


@dataclass(frozen=True, eq=False)
class CoreFit:
    coef: FloatArray  # (m, p), zero beyond ncols
    ncols: IntArray  # (m,) 0 = no data
    slope: FloatArray  # (m,) per day
    t_ref: float  # time in days of the step right after the data
    beta: FloatArray  # (m, G, F)
    span_days: FloatArray  # (m,)
    resid: FloatArray  # (m, k) residuals from the profile and trend of the last k steps
    # (m,) factor the history before a lasting level change was rescaled by (1: none)
    level_factor: FloatArray | None = None
    level_notes: list[dict[str, Any]] | None = None  # per row: what _adapt_history did
    #: Data published in blocks (see fit_core's ``blocks``): (m,) steps per block (1: none)
    #: and (m,) the position modulo the block where blocks start, in history steps.
    block: IntArray | None = None
    block_offset: IntArray | None = None
    #: (m, G, F) the residual model for origins on a block boundary (rows without blocks:
    #: ``beta``); ``beta`` itself, fitted from every position, serves the other origins.
    boundary_beta: FloatArray | None = None


def _spans(obs: np.ndarray[Any, np.dtype[np.bool_]], step_minutes: float) -> FloatArray:
    t = obs.shape[1]
    has = obs.any(axis=1)
    first = np.argmax(obs, axis=1)
    last = t - 1 - np.argmax(obs[:, ::-1], axis=1)
    span = (last - first + 1) * step_minutes / MINUTES_PER_DAY
    return np.where(has, span, 0.0).astype(np.float64)


def _recency(t: int, step_minutes: float, cfg: Config) -> FloatArray:
    if cfg.halflife_days is None:
        return np.ones(t)
    age_days = (t - 1 - np.arange(t)) * step_minutes / MINUTES_PER_DAY
    return np.asarray(0.5 ** (age_days / cfg.halflife_days), dtype=np.float64)


def _wls_batch(
    y: FloatArray,
    obs: np.ndarray[Any, np.dtype[np.bool_]],
    x: FloatArray,
    w: FloatArray,
    gram_cache: dict[tuple[int, int], FloatArray],
) -> FloatArray:
    """Weighted least squares for many series sharing one design matrix.

    The weighted Gram matrix of the complete design is computed once and downdated by
    each series' missing rows (or rebuilt from its observed rows when most are
    missing), so the cost per series is proportional to its number of gaps.
    """
    t, p = x.shape
    xw = x * w[:, None]
    key = (t, p)
    gram = gram_cache.get(key)
    if gram is None:
        gram = x.T @ xw
        gram_cache[key] = gram
    y0 = np.where(obs, y, 0.0)
    b = y0 @ xw
    a = np.repeat(gram[None, :, :], y.shape[0], axis=0)
    n_missing = t - obs.sum(axis=1)
    for i in np.flatnonzero(n_missing > 0):
        if n_missing[i] <= t // 2:
            miss = ~obs[i]
            a[i] -= x[miss].T @ xw[miss]
        else:
            keep = obs[i]
            a[i] = x[keep].T @ xw[keep]
    # A tiny ridge on the harmonics keeps partially covered cycles solvable.
    lam = 1e-4 * np.maximum(a[:, 0, 0], 1e-12)
    diag = np.arange(1, p)
    a[:, diag, diag] += lam[:, None]
    coef = np.linalg.solve(a, b[:, :, None])[:, :, 0]
    # Winsorising passes (cheap Huber steps): clip observations more than 4 robust
    # SDs from the previous fit and re-solve. The Gram matrices do not change, so this
    # costs one more right-hand side, and a burst no longer bends the daily profile.
    # Iterated because a large burst first bends the profile towards itself.
    for _ in range(3):
        fitted = coef @ x.T
        res = np.abs(y - fitted)[:, :: max(1, t // 2000)]
        mad = nanquantile(res, [0.5], axis=1)[0]
        bound = np.where(np.isfinite(mad) & (mad > 0), 4.0 * 1.4826 * mad, np.inf)
        clipped = np.clip(y, fitted - bound[:, None], fitted + bound[:, None])
        b = np.where(obs, clipped, 0.0) @ xw
        coef = np.linalg.solve(a, b[:, :, None])[:, :, 0]
    return np.asarray(coef, dtype=np.float64)


def _daily_medians(
    y: FloatArray, day: IntArray, step_minutes: float
) -> tuple[FloatArray, IntArray]:
    """Median of each local day (days at least 80 % observed), for the trend fit."""
    stride = max(1, round(5.0 / step_minutes))
    sel = np.arange(0, y.shape[1], stride)
    d = day[sel]
    days, di = np.unique(d, return_inverse=True)
    first = np.searchsorted(di, np.arange(days.size))
    pos = np.arange(sel.size) - first[di]
    width = int(pos.max()) + 1
    grid = np.full((y.shape[0], days.size, width), np.nan)
    grid[:, di, pos] = y[:, sel]
    full_day = MINUTES_PER_DAY / (step_minutes * stride)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(grid, axis=2)
    count = np.isfinite(grid).sum(axis=2)
    med = np.where(count >= 0.8 * full_day, med, np.nan)
    return np.asarray(med, dtype=np.float64), days.astype(np.int64)


def _robust_trend(
    y: FloatArray,
    day: IntArray,
    span_days: FloatArray,
    step_minutes: float,
    cfg: Config,
) -> FloatArray:
    """Slope per day of a Huber regression on daily medians, kept only when significant.

    Daily medians are immune to a burst of a few hours, and the Huber loss (statsmodels
    RLM) down-weights a whole anomalous day, so a one-off spike does not tilt the
    forecast; the RLM t-test is what decides whether growth is real.
    """
    slope = np.zeros(y.shape[0])
    cand = np.flatnonzero(span_days >= cfg.min_trend_days)
    if cand.size == 0:
        return slope
    med, days = _daily_medians(y[cand], day, step_minutes)
    ok = np.isfinite(med)
    enough = ok.sum(axis=1) >= cfg.min_trend_days
    x = (days - days[0]).astype(np.float64)
    # Cheap least-squares screen first: most series have no trend.
    v0 = np.where(ok, med, 0.0)
    cnt = np.maximum(ok.sum(axis=1), 1)
    xm = (ok * x).sum(axis=1) / cnt
    xc = np.where(ok, x[None, :] - xm[:, None], 0.0)
    vm = v0.sum(axis=1) / cnt
    sxx = np.maximum((xc * xc).sum(axis=1), 1e-12)
    b = (xc * (v0 - vm[:, None])).sum(axis=1) / sxx
    res = np.where(ok, v0 - vm[:, None] - b[:, None] * xc, 0.0)
    se = np.sqrt(np.maximum((res * res).sum(axis=1) / np.maximum(cnt - 2, 1), 1e-18) / sxx)
    screen = enough & (np.abs(b) / se >= 2.0)
    wd = (days + 3) % 7
    for weekly in (False, True):
        rows = np.flatnonzero(screen & ((ok.sum(axis=1) >= 14) == weekly))
        if rows.size == 0:
            continue
        cols = [np.ones_like(x), x]
        if weekly:
            cols += [(wd == k).astype(np.float64) for k in range(1, 7)]
        exog = np.column_stack(cols)
        params, pval = huber_regression(med[rows], exog, ok[rows])
        for j, r in enumerate(rows.tolist()):
            keep = ok[r]
            if (math.isfinite(pval[j]) and math.isfinite(params[j, 1])
                    and pval[j] < cfg.trend_pvalue and _halves_agree(x[keep], med[r][keep])):
                slope[cand[r]] = params[j, 1]
    return slope


def huber_regression(
    v: FloatArray, exog: FloatArray, ok: np.ndarray[Any, np.dtype[np.bool_]],
    c: float = 1.345, maxiter: int = 50, tol: float = 1e-8,
) -> tuple[FloatArray, FloatArray]:
    """Many Huber M-regressions at once (rows of v, observed where ok) on one design,
    as statsmodels RLM(M=HuberT()).fit() does: IRLS from OLS with the MAD scale updated
    each pass, H1 covariance. Returns (params (k, p), two-sided normal p-value of the
    coefficient of exog column 1 (k,))."""
    k, _n = v.shape
    p = exog.shape[1]
    w_obs = ok.astype(np.float64)
    v0 = np.where(ok, v, 0.0)
    nobs = w_obs.sum(axis=1)
    ridge = 1e-10 * np.eye(p)

    def wls(w: FloatArray) -> FloatArray:
        xtw = exog.T[None, :, :] * w[:, None, :]  # (k, p, n)
        a = xtw @ exog + ridge
        return np.asarray(np.linalg.solve(a, (xtw @ v0[:, :, None]))[:, :, 0], dtype=np.float64)

    def mad(r: FloatArray) -> FloatArray:
        med = nanquantile(np.where(ok, np.abs(r), np.nan), [0.5], axis=1)[0]
        return np.asarray(med / 0.6744897501960817, dtype=np.float64)

    params = wls(w_obs)
    resid = v0 - params @ exog.T
    scale = mad(resid)
    dev_old = np.full(k, np.inf)
    for _ in range(maxiter):
        u = resid / np.where(scale > 0, scale, 1.0)[:, None]
        au = np.abs(u)
        w = np.where(au <= c, 1.0, c / np.maximum(au, 1e-300)) * w_obs
        params = wls(w)
        resid = v0 - params @ exog.T
        scale = mad(resid)
        u = resid / np.where(scale > 0, scale, 1.0)[:, None]
        au = np.abs(u)
        rho = np.where(au <= c, 0.5 * u * u, c * au - 0.5 * c * c)
        dev = (rho * w_obs).sum(axis=1)
        if np.all(np.abs(dev - dev_old) <= tol):
            break
        dev_old = dev
    u = resid / np.where(scale > 0, scale, 1.0)[:, None]
    psi = np.clip(u, -c, c)
    dpsi = (np.abs(u) <= c).astype(np.float64)
    n = np.maximum(nobs, 1.0)
    m_d = (dpsi * w_obs).sum(axis=1) / n
    var_d = ((dpsi - m_d[:, None]) ** 2 * w_obs).sum(axis=1) / n
    kk = 1.0 + p / n * var_d / np.maximum(m_d, 1e-12) ** 2
    ss_psi = (psi * psi * w_obs).sum(axis=1)
    df_resid = np.maximum(n - p, 1.0)
    xtx = (exog.T[None, :, :] * w_obs[:, None, :]) @ exog + ridge
    inv = np.linalg.pinv(xtx)
    var1 = kk**2 * (ss_psi / df_resid * scale**2) / np.maximum(m_d, 1e-12) ** 2 * inv[:, 1, 1]
    z = np.abs(params[:, 1]) / np.sqrt(np.maximum(var1, 1e-300))
    pval = np.array([2.0 * (1.0 - NormalDist().cdf(float(zz))) for zz in z])
    return params, pval


def nanquantile(
    a: FloatArray, levels: tuple[float, ...] | list[float] | FloatArray, axis: int
) -> FloatArray:
    """np.nanquantile (linear method) vectorised with one sort; numpy's own loops in Python.

    ``levels`` may also be an array (nq, *shape of the result) of per-row levels."""
    s = np.sort(np.moveaxis(a, axis, -1), axis=-1)
    n = np.isfinite(s).sum(axis=-1)
    out = np.full((len(levels), *n.shape), np.nan)
    for j, q in enumerate(levels):
        pos = np.clip(q, 0.0, 1.0) * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        v_lo = np.take_along_axis(s, lo[..., None], axis=-1)[..., 0]
        v_hi = np.take_along_axis(s, hi[..., None], axis=-1)[..., 0]
        out[j] = np.where(n > 0, v_lo + (pos - lo) * (v_hi - v_lo), np.nan)
    return out


def _halves_agree(x: FloatArray, v: FloatArray) -> bool:
    """Growth is only believed when both halves of the history rise (or fall): a single
    level shift makes a significant-looking line but its halves are flat or disagree."""
    half = x.size // 2
    signs = []
    for xs, vs in ((x[:half], v[:half]), (x[half:], v[half:])):
        xc = xs - xs.mean()
        signs.append(np.sign(float(xc @ (vs - np.median(vs)))))
    return bool(signs[0] == signs[1] != 0)


def recent_features(r: FloatArray, ends: IntArray, windows: IntArray) -> FloatArray:
    """NaN-aware means of the residuals over trailing windows ending before each origin.

    A window with no observation contributes 0, i.e. "no evidence of a deviation".
    """
    m = r.shape[0]
    if ends.size:
        # Only the stretch the windows can reach is summed.
        first = max(0, int(ends.min()) - int(windows.max()))
        r = r[:, first : int(ends.max())]
        ends = ends - first
    ok = np.isfinite(r)
    zeros = np.zeros((m, 1))
    c = np.concatenate((zeros, np.cumsum(np.where(ok, r, 0.0), axis=1)), axis=1)
    n = np.concatenate((zeros, np.cumsum(ok, axis=1)), axis=1)
    out = np.zeros((m, ends.size, windows.size))
    for j, w in enumerate(windows.tolist()):
        lo = np.maximum(ends - w, 0)
        s = c[:, ends] - c[:, lo]
        k = n[:, ends] - n[:, lo]
        out[:, :, j] = np.where(k > 0, s / np.maximum(k, 1), 0.0)
    return out


def lag_steps(cfg: Config, step_minutes: float) -> IntArray:
    return np.array([steps_for(d * MINUTES_PER_DAY, step_minutes) for d in cfg.lag_days],
                    dtype=np.int64)


def lag_half(cfg: Config, step_minutes: float) -> int:
    return round(cfg.lag_window_minutes / step_minutes)


def lag_features(
    r: FloatArray, origins: IntArray, hs: IntArray, lags: IntArray, half: int
) -> FloatArray:
    """Seasonal-naive components of the residual for target origin + h - 1: for each lag L,
    the mean residual over +- half steps around target - L * ceil(h / L) (only steps
    before the origin), NaN-aware, 0 when unobserved. Returns (m, G, O, len(lags))."""
    m, t = r.shape
    out = np.zeros((m, hs.size, origins.size, lags.size))
    if origins.size == 0 or lags.size == 0:
        return out
    o_min, o_max, h_max = int(origins.min()), int(origins.max()), int(hs.max())
    for j, lag in enumerate(lags.tolist()):
        # Only the stretch this lag's windows can reach is summed.
        first = max(0, o_min - lag - half)
        last = min(t, o_max, o_max - lag + h_max + half)
        if last <= first:
            continue
        seg = r[:, first:last]
        ok = np.isfinite(seg)
        zeros = np.zeros((m, 1))
        c = np.concatenate((zeros, np.cumsum(np.where(ok, seg, 0.0), axis=1)), axis=1)
        n: FloatArray = np.concatenate((zeros, np.cumsum(ok, axis=1, dtype=np.float64)),
                                       axis=1)
        width = last - first
        org = origins - first
        tgt = org[None, :] + hs[:, None] - 1  # (G, O)
        src = tgt - lag * np.ceil(hs / lag).astype(np.int64)[:, None]
        lo = np.clip(src - half, 0, width)
        hi = np.clip(np.minimum(src + half + 1, org[None, :]), 0, width)
        hi = np.maximum(hi, lo)
        k = n[:, hi] - n[:, lo]
        out[:, :, :, j] = np.where(k > 0, (c[:, hi] - c[:, lo]) / np.maximum(k, 1), 0.0)
    return out


def n_features(cfg: Config) -> int:
    return len(cfg.feature_windows_minutes)


def _fit_block_residual_model(
    beta: FloatArray, r: FloatArray, first: int, block: IntArray, offset: IntArray,
    step_minutes: float, cfg: Config,
) -> None:
    """Refit, in place, the rows of ``beta`` of the series published in blocks (``block`` >
    1) from origins on their block boundaries alone (see :func:`_huber_refit`). ``r`` holds
    the residuals of history steps ``first`` onwards.

    From an origin inside a block the next steps repeat the value already published, so
    coefficients fitted over every position learn to carry the last value forward; from a
    boundary nothing of the next block is known (issue #11). FittedModel.predict uses
    these coefficients for origins on a boundary, the pooled ones elsewhere.
    """
    for w in np.unique(block[block > 1]).tolist():
        for k in np.unique(offset[block == w]).tolist():
            rows = np.flatnonzero((block == w) & (offset == k))
            beta[rows] = _fit_residual_model(r[rows], step_minutes, cfg,
                                             boundary=(w, (k - first) % w))


def _fit_residual_model(
    r: FloatArray, step_minutes: float, cfg: Config,
    boundary: tuple[int, int] | None = None,
) -> FloatArray:
    """Direct multi-horizon regression of the residual h steps ahead on recent residual means.

    One small ridge regression per horizon of the grid: the coefficients say how much of
    the current deviation from the seasonal profile (last minute, last 10 minutes, last
    hour, last 6 hours) persists h steps later, which captures short-term
    autocorrelation and level shifts without iterating a one-step model.

    With ``boundary`` (W, k) the origins are the steps at k modulo W of ``r`` (block
    boundaries, see :func:`_fit_block_residual_model`) instead of a stride.
    """
    hs = horizon_grid(cfg, step_minutes)
    windows = feature_windows(cfg, step_minutes)
    nf = n_features(cfg)
    stride = steps_for(cfg.origin_stride_minutes, step_minutes)
    lo = max(1, r.shape[1] - steps_for(cfg.residual_fit_days * MINUTES_PER_DAY, step_minutes))
    # Only the stretch the origins' windows and targets reach is used.
    off = max(0, lo - int(windows.max()))
    r = r[:, off:]
    lo -= off
    m, t = r.shape
    beta = np.zeros((m, hs.size, nf))
    fitted = np.zeros((m, hs.size), dtype=bool)
    if boundary is None:
        origins = np.arange(lo, t, stride if t - lo > 50 * stride else 1)
    else:
        w, k = boundary
        origins = np.arange(lo + (k - off - lo) % w, t, w)
    if origins.size:
        # Bound the influence of rare huge bursts on the coefficients (a Huber-like cap at
        # 8 robust SDs), while level shifts of ordinary size keep their full weight.
        sub = np.abs(r[:, lo :: max(1, (t - lo) // 2000)])  # a robust scale needs no more
        sd = 1.4826 * nanquantile(sub, [0.5], axis=1)[0]
        cap = np.where(np.isfinite(sd) & (sd > 0), 8.0 * sd, np.inf)[:, None]
        r = np.clip(r, -cap, cap)
        feats = recent_features(r, origins, windows)  # (m, O, W)
        tgt = origins[None, :] + hs[:, None] - 1  # (G, O)
        inside = tgt < t
        rt = r[:, np.minimum(tgt, t - 1)]  # (m, G, O)
        mask = np.isfinite(rt) & inside[None, :, :]
        rt0 = np.where(mask, rt, 0.0)
        outer = (feats[:, :, :, None] * feats[:, :, None, :]).reshape(m, origins.size, nf * nf)
        maskf = mask.astype(np.float64)
        a_flat = np.empty((m, hs.size, nf * nf))
        b = np.empty((m, hs.size, nf))
        # Plain 2-D products per series: numpy's stacked matmul does not reach BLAS speed.
        for i in range(m):
            a_flat[i] = maskf[i] @ outer[i]
            b[i] = rt0[i] @ feats[i]
        a = a_flat.reshape(m, hs.size, nf, nf)
        lam = cfg.residual_ridge * np.trace(a, axis1=2, axis2=3) / nf + 1e-12
        a = a + lam[:, :, None, None] * np.eye(nf)
        beta = np.linalg.solve(a, b[..., None])[..., 0]
        if boundary is not None:
            beta = _huber_refit(beta, feats, rt0, maskf, cfg)
        fitted = mask.sum(axis=2) >= cfg.min_errors
    default = default_beta(cfg)
    for g in range(hs.size):
        miss = ~fitted[:, g]
        if not miss.any():
            continue
        if g == 0:
            beta[miss, 0] = default
        else:
            beta[miss, g] = beta[miss, g - 1]
            # A row unfitted at g inherits g-1, which is fitted or itself inherited.
        fitted[miss, g] = True
    return beta


def _huber_refit(beta: FloatArray, feats: FloatArray, rt0: FloatArray, maskf: FloatArray,
                 cfg: Config, c: float = 1.345, iters: int = 10) -> FloatArray:
    """Huber M-estimate of the residual model (m, G, F), by iteratively reweighted ridge
    regressions from its least-squares fit ``beta``: features (m, O, F), targets (m, G, O)
    and their 0/1 mask. Errors beyond ``c`` robust SDs (per series and horizon) weigh
    ``c SD / |error|``.

    Used for block boundaries, where each origin's target is a whole published block: a
    burst block that the next block does not repeat would otherwise pull the coefficients
    away from what holds for the ordinary blocks (measured on the ServeGen traces: least
    squares from the boundaries loses to the pooled fit at 5 minutes, Huber wins at 1 h).
    """
    m, g_n, o_n = rt0.shape
    nf = feats.shape[2]
    outer = (feats[:, :, :, None] * feats[:, :, None, :]).reshape(m, o_n, nf * nf)
    for _ in range(iters):
        e = rt0 - np.einsum("mof,mgf->mgo", feats, beta)
        mad = 1.4826 * nanquantile(np.where(maskf > 0, np.abs(e), np.nan), [0.5], axis=2)[0]
        delta = c * np.maximum(np.where(np.isfinite(mad), mad, 0.0), 1e-12)[..., None]
        w = maskf * np.minimum(1.0, delta / np.maximum(np.abs(e), 1e-300))
        a = np.empty((m, g_n, nf * nf))
        b = np.empty((m, g_n, nf))
        for i in range(m):
            a[i] = w[i] @ outer[i]
            b[i] = (w[i] * rt0[i]) @ feats[i]
        a4 = a.reshape(m, g_n, nf, nf)
        lam = cfg.residual_ridge * np.trace(a4, axis1=2, axis2=3) / nf + 1e-12
        new = np.linalg.solve(a4 + lam[:, :, None, None] * np.eye(nf), b[..., None])[..., 0]
        done = bool(np.all(np.abs(new - beta) <= 1e-6 * (1.0 + np.abs(beta))))
        beta = new
        if done:
            break
    return np.asarray(beta, dtype=np.float64)


def hour_blocks(day: IntArray, step_minutes: float) -> tuple[IntArray, int, IntArray, IntArray]:
    """Local-hour blocks of a step grid: (block of each step, number of blocks, local hour of
    each block, local day of each block), blocks in time order.

    ``day`` is the local day of each step; a first day that starts mid-day is aligned to
    its end, so its blocks carry the right hours. DST days keep 23 or 25 hours (the 25th
    joins the 24th)."""
    t = day.size
    spd = steps_for(MINUTES_PER_DAY, step_minutes)
    new_day = np.concatenate(([True], day[1:] != day[:-1])) if t else np.zeros(0, dtype=bool)
    run = np.cumsum(new_day) - 1
    starts = np.flatnonzero(new_day)
    pos = np.arange(t) - starts[run] if t else np.zeros(0, dtype=np.int64)
    if starts.size:
        first_len = int(starts[1]) if starts.size > 1 else t
        if first_len < spd:
            pos[:first_len] += spd - first_len
    hour = np.minimum((pos * step_minutes) // 60, 23).astype(np.int64)
    key = run * 24 + hour
    uniq, inv = np.unique(key, return_inverse=True)
    return (inv.astype(np.int64), int(uniq.size), (uniq % 24).astype(np.int64),
            day[starts][uniq // 24].astype(np.int64) if t else np.zeros(0, dtype=np.int64))


def block_means(v: FloatArray, inv: IntArray, nb: int, min_share: float = 0.5) -> FloatArray:
    """NaN-aware means of the rows of ``v`` over the blocks ``inv`` (NaN when less than
    ``min_share`` of a block is observed): (m, nb). ``inv`` is non-decreasing (blocks are
    runs of consecutive steps) and takes every value in 0..nb-1."""
    ok = np.isfinite(v)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(inv)) + 1))
    s = np.add.reduceat(np.where(ok, v, 0.0), starts, axis=1)
    n = np.add.reduceat(ok.astype(np.float64), starts, axis=1)
    size = np.diff(np.concatenate((starts, [inv.size]))).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= min_share * np.maximum(size, 1.0)[None, :], s / n, np.nan)


def log_ratio(obs: FloatArray, ref: FloatArray, floor: float) -> FloatArray:
    """log((obs + floor) / (ref + floor)), NaN where either is missing; ``floor`` keeps
    idle stretches (near-zero load) from reading as huge relative changes."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.log((np.maximum(obs, 0.0) + floor) / (np.maximum(ref, 0.0) + floor))
    return np.asarray(out, dtype=np.float64)


def level_change(
    z: FloatArray, *, min_pre: int, min_post: int, search: int, min_log: float,
    sd_factor: float, consistency: float,
) -> tuple[int, float, float] | None:
    """The latest lasting level change of a series of block log-ratios to the seasonal
    profile, or None: (first block of the new level, new minus old level, new level).

    A change at block c splits the observed blocks into a pre part (at least ``min_pre``)
    and a post part (at least ``min_post``, starting within the last ``search`` blocks)
    that runs to the end. Among the splits whose post blocks lie, a ``consistency`` share
    of them and the last one, beyond the midpoint of the two parts' means (a one-off
    burst or day in the past spoils that, a step does not), the one with the largest
    two-sample statistic is taken. It is believed when the medians of the parts differ
    by at least ``min_log`` and by ``sd_factor`` robust SDs of the pre part around its
    median (the hourly noise plus the day-to-day wander of the load), and when the mean of
    the post part is further from the pre median than the mean of any stretch of the same
    length before it ever was: a burst of a few hours is a change only on a series that
    never had such bursts, and on a wandering one the new level has to last longer than
    its usual excursions before it is believed.
    """
    idx = np.flatnonzero(np.isfinite(z))
    zz = z[idx]
    n = zz.size
    if n < min_pre + min_post:
        return None
    j = np.arange(max(min_pre, n - search), n - min_post + 1)
    if j.size == 0:
        return None
    cs = np.concatenate(([0.0], np.cumsum(zz)))
    pre_mean = cs[j] / j
    post_mean = (cs[n] - cs[j]) / (n - j)
    diff = post_mean - pre_mean
    # Splits whose means are not even half the minimum change apart cannot pass.
    near = np.abs(diff) >= 0.5 * min_log
    if not near.any():
        return None
    j, pre_mean, post_mean, diff = j[near], pre_mean[near], post_mean[near], diff[near]
    mid = 0.5 * (pre_mean + post_mean)
    sign = np.sign(diff)
    post = np.arange(n)[None, :] >= j[:, None]
    beyond = ((zz[None, :] - mid[:, None]) * sign[:, None] > 0) & post
    share = beyond.sum(axis=1) / (n - j)
    good = (share >= consistency) & beyond[:, -1] & (sign != 0)
    if not good.any():
        return None
    stat = np.where(good, np.abs(diff) * np.sqrt(j * (n - j) / n), -np.inf)
    k = int(np.argmax(stat))
    c = int(j[k])
    b = float(np.median(zz[:c]))
    a = float(np.median(zz[c:]))
    sd = 1.4826 * float(np.median(np.abs(zz[:c] - b)))
    d = a - b
    if abs(d) < max(min_log, sd_factor * sd) or np.sign(d) != sign[k]:
        return None
    length = n - c
    if length <= c:
        pre = np.concatenate(([0.0], np.cumsum(zz[:c] - b)))
        excursion = np.abs(pre[length:] - pre[:-length]) / length
        if abs(float(zz[c:].mean()) - b) <= float(excursion.max()):
            return None
    return int(idx[c]), d, a


def hour_of_day_median(h: FloatArray, hours: IntArray, days: IntArray) -> FloatArray:
    """Median of each local hour of the day over all days, per row of the hourly means
    ``h`` (m, blocks): (m, 24), NaN for an hour never observed."""
    m = h.shape[0]
    grid = np.full((m, int(days.max() - days.min()) + 1 if days.size else 0, 24), np.nan)
    grid[:, days - (days.min() if days.size else 0), hours] = h
    return np.asarray(nanquantile(grid, [0.5], axis=1)[0], dtype=np.float64)


def outlier_days(
    h: FloatArray, hours: IntArray, days: IntArray, floor: float, cfg: Config
) -> IntArray:
    """Days (local day numbers) holding an outlier: see :func:`outlier_blocks`."""
    return np.unique(days[outlier_blocks(h, hours, days, floor, cfg)])


def outlier_blocks(
    h: FloatArray, hours: IntArray, days: IntArray, floor: float, cfg: Config
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The hours of local days whose level stands out from the usual one, for one series of
    hourly means ``h`` (blocks with local hour ``hours`` and day ``days``).

    A day's level is the median over its hours of log(h / median of that hour over all
    days). A day is an outlier when it is ``outlier_min_ratio`` away from the median day
    and ``level_sd_factor + 1`` robust SDs of the days' spread, and also that far from the
    other days of the same weekday when there are any (a quiet weekend every week is the
    weekly shape, not an outlier). The last day, days with fewer than 20 observed hours,
    and days off in the direction the latest day is off too (more than half as far: a
    lasting change under way) are never outliers. An outlier day's stretch is extended
    over the adjacent hours that are off in the same direction by more than half the
    threshold (an event in another time zone straddles two local days), but not over the
    latest hours (they may be a change starting). Returns a mask of the blocks.
    """
    none = np.zeros(h.size, dtype=bool)
    ok = np.isfinite(h)
    if ok.sum() < 48:
        return none
    zb = log_ratio(h, hour_of_day_median(h[None, :], hours, days)[0, hours], floor)
    d0 = int(days.min())
    uniq = np.arange(d0, int(days.max()) + 1, dtype=np.int64)
    grid = np.full((uniq.size, 24), np.nan)
    grid[days - d0, hours] = zb
    level = nanquantile(grid, [0.5], axis=1)[0]
    level = np.where(np.isfinite(grid).sum(axis=1) >= 20, level, np.nan)
    seen = np.isfinite(level)
    if seen.sum() < 4:
        return none
    med = float(np.median(level[seen]))
    sd = 1.4826 * float(np.median(np.abs(level[seen] - med)))
    tau = max(math.log(cfg.outlier_min_ratio), (cfg.level_sd_factor + 1.0) * sd)
    weekday = (uniq + 3) % 7
    # The latest day (today so far, when it is judged) says where the level is now: days
    # off in the same direction may be the start of a lasting change, not outliers.
    now = level[uniq.size - 1] if seen[-1] else level[seen][-1]
    out: list[int] = []
    for k in np.flatnonzero(seen & (np.abs(level - med) > tau)).tolist():
        if k == uniq.size - 1:
            continue
        if (level[k] - med) * (now - med) > 0 and abs(now - med) > 0.5 * tau:
            continue
        same = seen & (weekday == weekday[k])
        same[k] = False
        if same.any() and abs(level[k] - float(np.median(level[same]))) <= tau:
            continue
        out.append(k)
    mask = none.copy()
    for k in out:
        sign = 1.0 if level[k] > med else -1.0
        inside = np.flatnonzero(days == uniq[k])
        mask[inside] = True
        off = np.isfinite(zb) & ((zb - med) * sign > 0.5 * tau)
        # Extend over the contiguous off hours on either side (missing hours end it).
        j = int(inside[0]) - 1
        while j >= 0 and off[j]:
            mask[j] = True
            j -= 1
        j = int(inside[-1]) + 1
        run_end = j
        while run_end < h.size and off[run_end]:
            run_end += 1
        if run_end < h.size:  # the run ended before now: part of the outlier
            mask[j:run_end] = True
    return mask


def recent_level(y: FloatArray, base: FloatArray, step_minutes: float,
                 cfg: Config = DEFAULT) -> tuple[float, int]:
    """A lasting level change since the fit, read at forecast time: (factor, first step).

    ``y`` and ``base`` are the observations (NaN: unknown) and the fitted profile over the
    steps just before the origin, in scaled units (the stored residual tail plus the
    latest observations). Hourly means (aligned to the origin) are compared with the
    profile's, and :func:`level_change` decides, with the fit's thresholds, whether the
    latest hours sit at a new level for good. Returns the factor by which the profile is
    to be scaled from the returned step on (observed over expected load since the change,
    rounded to a power of 1.05), or ``(1.0, len(y))`` when there is none.
    """
    n = y.size
    blk = steps_for(60.0, step_minutes)
    nb = n // blk
    if step_minutes > 60 or nb < cfg.level_min_pre_hours + cfg.level_min_post_hours:
        return 1.0, n
    head = n - nb * blk
    inv = np.repeat(np.arange(nb, dtype=np.int64), blk)
    hb = block_means(y[None, head:], inv, nb)[0]
    bb = block_means(base[None, head:], inv, nb)[0]
    found = level_change(
        log_ratio(hb, bb, cfg.level_floor), min_pre=cfg.level_min_pre_hours,
        min_post=cfg.level_min_post_hours, search=round(cfg.level_search_days * 24),
        min_log=math.log(cfg.level_min_ratio), sd_factor=cfg.level_sd_factor,
        consistency=cfg.level_consistency)
    if found is None:
        return 1.0, n
    c = found[0]
    both = np.isfinite(hb[c:]) & np.isfinite(bb[c:])
    num, den = float(hb[c:][both].sum()), float(np.maximum(bb[c:][both], 0.0).sum())
    if not (num > 0 and den > 0):
        return 1.0, n
    # The factor moves in 5 % steps: a forecast re-read every few minutes should not see
    # a new level (and re-plan capacity) each time a few more minutes of it are in.
    q = math.log(1.05)
    return math.exp(round(math.log(num / den) / q) * q), head + c * blk


def _adapt_history(
    yd: FloatArray, day: IntArray, step_minutes: float, cfg: Config,
    profile_before: Callable[[FloatArray, int], FloatArray],
) -> tuple[FloatArray, FloatArray, list[dict[str, Any]]]:
    """The history the profile is refitted on: one-off outlier days left out, then the
    data before a lasting level change rescaled to the new level. Returns (adjusted
    history, per-row factor applied before the change (1: none), per-row notes).

    Both are found on hourly means against the median of the same local hour over all
    days (which the latest hours do not move, where a recency-weighted profile would bend
    towards them); the size of a change is measured against ``profile_before(history
    before the change (1, c), row)``, the full profile fitted on that part alone."""
    m, t = yd.shape
    factor = np.ones(m)
    notes: list[dict[str, Any]] = [{} for _ in range(m)]
    if step_minutes > 60 or t == 0:
        return yd, factor, notes
    inv, nb, hours, days = hour_blocks(day[:t], step_minutes)
    hb = block_means(yd, inv, nb)
    z = log_ratio(hb, hour_of_day_median(hb, hours, days)[:, hours], cfg.level_floor)
    out = yd
    for i in range(m):
        drop = outlier_blocks(hb[i], hours, days, cfg.level_floor, cfg)
        zi = z[i]
        if drop.any():
            if out is yd:
                out = yd.copy()
            out[i, drop[inv]] = np.nan
            zi = np.where(drop, np.nan, zi)
            notes[i]["outlier_days"] = np.unique(days[drop]).tolist()
            notes[i]["outlier_hours"] = int(drop.sum())
        found = level_change(
            zi, min_pre=cfg.level_min_pre_hours, min_post=cfg.level_fit_min_post_hours,
            search=round(cfg.level_search_days * 24), min_log=math.log(cfg.level_min_ratio),
            sd_factor=cfg.level_sd_factor, consistency=cfg.level_consistency)
        if found is None:
            continue
        c, d, _a = found
        first = int(np.searchsorted(inv, c))
        if out is yd:
            out = yd.copy()
        # The size: observed over expected load since the change (a ratio of sums, so
        # that quiet hours weigh as little as they carry).
        expect = block_means(profile_before(out[i : i + 1, :first], i)[None, :], inv, nb)[0, c:]
        both = np.isfinite(hb[i, c:]) & np.isfinite(expect)
        num, den = float(hb[i, c:][both].sum()), float(np.maximum(expect[both], 0.0).sum())
        if num > 0 and den > 0:
            d = math.log(num / den)
        factor[i] = math.exp(d)
        out[i, :first] *= factor[i]
        notes[i]["level_change_step"] = first
        notes[i]["level_change_factor"] = round(factor[i], 4)
    return out, factor, notes


def fit_core(
    y: FloatArray,
    x_full: FloatArray,
    day: IntArray,
    step_minutes: float,
    cfg: Config,
    gram_cache: dict[tuple[int, int], FloatArray],
    reuse: CoreFit | None = None,
    blocks: tuple[IntArray, IntArray] | None = None,
) -> CoreFit:
    """Fit profile, trend and residual model. With ``reuse`` (the fit on the full history,
    when refitting on a prefix for calibration) the trend slope is taken over rather than
    re-estimated (a robust slope on daily medians barely moves when the last days are
    held out); profile and residual model are refitted, so held-out errors stay honest.

    ``blocks`` ((m,) steps per publication block, (m,) offset of the block starts; taken
    over from ``reuse`` when not given) marks series published in blocks: their residual
    model is fitted from block boundaries only (see :func:`_fit_residual_model`)."""
    t = y.shape[1]
    obs = np.isfinite(y)
    span = _spans(obs, step_minutes)
    p_daily = 1 + 2 * cfg.daily_harmonics
    p_all = x_full.shape[1]
    ncols = np.where(
        span >= cfg.weekly_min_days, p_all, np.where(span >= cfg.daily_min_days, p_daily, 1)
    )
    ncols = np.where(span > 0, ncols, 0).astype(np.int64)
    tdays = np.arange(t) * step_minutes / MINUTES_PER_DAY
    t_ref = t * step_minutes / MINUTES_PER_DAY
    slope = (_robust_trend(y, day[:t], span, step_minutes, cfg) if reuse is None
             else reuse.slope)
    yd = y - slope[:, None] * (tdays - t_ref)[None, :] if np.any(slope != 0) else y
    # One-off outlier days are left out and the history before a lasting level change is
    # rescaled to the new level, so that the seasonal profile replays neither.
    def profile_before(prefix: FloatArray, i: int) -> FloatArray:
        c = _fit_profile(prefix, x_full, ncols[i : i + 1], step_minutes, cfg, gram_cache)
        return np.asarray((c @ x_full[:t].T)[0], dtype=np.float64)

    yd, level_factor, notes = _adapt_history(yd, day, step_minutes, cfg, profile_before)
    coef = _fit_profile(yd, x_full, ncols, step_minutes, cfg, gram_cache)
    # Residuals are only needed where the residual model and the stored tail look.
    keep = min(t, max(
        steps_for(cfg.residual_fit_days * MINUTES_PER_DAY, step_minutes)
        + int(feature_windows(cfg, step_minutes).max()),
        int(lag_steps(cfg, step_minutes).max(initial=0)) + lag_half(cfg, step_minutes),
    ))
    resid = yd[:, t - keep :] - coef @ x_full[t - keep : t].T
    if blocks is None and reuse is not None and reuse.block is not None:
        assert reuse.block_offset is not None
        blocks = (reuse.block, reuse.block_offset)
    beta = _fit_residual_model(resid, step_minutes, cfg)
    boundary_beta = None
    if blocks is not None and np.any(blocks[0] > 1):
        boundary_beta = beta.copy()
        _fit_block_residual_model(boundary_beta, resid, t - keep, blocks[0], blocks[1],
                                  step_minutes, cfg)
    return CoreFit(coef=coef, ncols=ncols, slope=slope, t_ref=t_ref, beta=beta, span_days=span,
                   resid=resid, level_factor=level_factor, level_notes=notes,
                   block=None if blocks is None else blocks[0],
                   block_offset=None if blocks is None else blocks[1],
                   boundary_beta=boundary_beta)


def _fit_profile(
    yd: FloatArray,
    x_full: FloatArray,
    ncols: IntArray,
    step_minutes: float,
    cfg: Config,
    gram_cache: dict[tuple[int, int], FloatArray],
) -> FloatArray:
    """Recency-weighted robust harmonic regression of each row on its first ncols columns."""
    m, t = yd.shape
    p_all = x_full.shape[1]
    # The harmonics vary on scales of hours, so the regression runs on block means of
    # about 5 minutes (the block-mean design is exact for a linear model): 5x cheaper.
    blk = max(1, min(round(5.0 / step_minutes), t))
    tb = t // blk
    head = t - tb * blk  # the oldest steps that do not fill a block are left out
    blocks = yd[:, head:].reshape(m, tb, blk)
    seen = np.isfinite(blocks)
    cnt = seen.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        yb = np.where(seen, blocks, 0.0).sum(axis=2) / cnt
    xb = x_full[head:t].reshape(tb, blk, p_all).mean(axis=1)
    w = _recency(tb, step_minutes * blk, cfg)
    obs_b = np.isfinite(yb)
    coef = np.zeros((m, p_all))
    for nc in np.unique(ncols).tolist():
        if nc == 0:
            continue
        rows = ncols == nc
        coef[rows, :nc] = _wls_batch(yb[rows], obs_b[rows], xb[:, :nc], w, gram_cache)
    return coef


def baseline(
    core: CoreFit, x_full: FloatArray, step_minutes: float, first: int = 0
) -> FloatArray:
    """Seasonal profile plus trend at every row of x_full (step ``first`` onwards), per
    series: (m, len(x_full))."""
    tdays = (first + np.arange(x_full.shape[0])) * step_minutes / MINUTES_PER_DAY
    return np.asarray(
        core.coef @ x_full.T + core.slope[:, None] * (tdays - core.t_ref)[None, :],
        dtype=np.float64,
    )


def blend_weights(cfg: Config, hs: IntArray, step_minutes: float) -> FloatArray:
    """Fixed combination of the model with the seasonal lags, by horizon: (G, 1 + L).

    The lags' total weight grows with log(horizon) from 0 at ``blend_from_minutes`` to
    ``blend_max_weight`` at one day and is split equally between the lags. Weights
    fitted on the held-out tail were measured and lost to this fixed rule on every
    ServeGen trace (a few days of holdout do not pin them down).
    """
    n_lags = len(cfg.lag_days)
    out = np.zeros((hs.size, 1 + n_lags))
    minutes = hs * step_minutes
    if n_lags:
        lo, hi = math.log(cfg.blend_from_minutes), math.log(MINUTES_PER_DAY)
        frac = np.clip((np.log(minutes) - lo) / (hi - lo), 0.0, 1.0) * cfg.blend_max_weight
        out[:, 1:] = (frac / n_lags)[:, None]
        out[:, 0] = 1.0 - frac
    else:
        out[:, 0] = 1.0
    return out

