"""Batched model fitting: harmonic regression, robust trend, direct residual model, calibration.

Every array here is in "scaled, calendar-adjusted" units: the raw value divided by the
calendar multiplier of its local day and by the series' typical level (median positive
value), so one set of thresholds and ridge penalties serves series of any magnitude.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import statsmodels.api as sm
from statsmodels.robust.norms import HuberT

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
    horizon_grid_minutes: tuple[float, ...] = (
        1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 90, 120, 150, 180,
        240, 300, 360, 480, 600, 720, 900, 1080, 1260, 1440,
    )
    residual_fit_days: float = 7.0
    # Origins are sampled with a stride co-prime to 10 so that data published in
    # 10-minute blocks is not always cut at the same place within a block.
    origin_stride_minutes: float = 7.0
    calibration_days: float = 3.0
    calibration_fraction: float = 1.0 / 3.0
    min_trend_days: int = 10
    trend_pvalue: float = 0.01
    residual_ridge: float = 1e-2
    level_floor: float = 0.05
    min_errors: int = 20
    scale_by_forecast: bool = True
    interval_levels: tuple[float, ...] = (0.025, 0.1, 0.9, 0.975)


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
        res = np.abs(y - fitted)[:, :: max(1, t // 5000)]
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
    for j, i in enumerate(cand.tolist()):
        ok = np.isfinite(med[j])
        if ok.sum() < cfg.min_trend_days:
            continue
        x = (days[ok] - days[ok][0]).astype(np.float64)
        v = med[j][ok]
        # Cheap least-squares screen: RLM costs milliseconds, most series have no trend.
        xc = x - x.mean()
        sxx = float(xc @ xc)
        b = float(xc @ (v - v.mean())) / sxx
        res = v - v.mean() - b * xc
        dof = max(1, x.size - 2)
        se = math.sqrt(max(float(res @ res) / dof, 1e-18) / sxx)
        if abs(b) / se < 2.0:
            continue
        exog_cols = [np.ones_like(x), x]
        if x.size >= 14:
            wd = (days[ok] + 3) % 7
            exog_cols += [(wd == k).astype(np.float64) for k in range(1, 7)]
        exog = np.column_stack(exog_cols)
        try:
            rlm = sm.RLM(v, exog, M=HuberT()).fit()
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError):
            continue
        p = float(rlm.pvalues[1])
        s = float(rlm.params[1])
        if math.isfinite(p) and math.isfinite(s) and p < cfg.trend_pvalue and _halves_agree(x, v):
            slope[i] = s
    return slope


def nanquantile(a: FloatArray, levels: tuple[float, ...] | list[float], axis: int) -> FloatArray:
    """np.nanquantile (linear method) vectorised with one sort; numpy's own loops in Python."""
    s = np.sort(np.moveaxis(a, axis, -1), axis=-1)
    n = np.isfinite(s).sum(axis=-1)
    out = np.full((len(levels), *n.shape), np.nan)
    for j, q in enumerate(levels):
        pos = q * np.maximum(n - 1, 0)
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


def _fit_residual_model(
    r: FloatArray, step_minutes: float, cfg: Config
) -> FloatArray:
    """Direct multi-horizon regression of the residual h steps ahead on recent residual means.

    One small ridge regression per horizon of the grid: the coefficients say how much of
    the current deviation from the seasonal profile (last minute, last 10 minutes, last
    hour, last 6 hours) persists h steps later, which captures short-term autocorrelation
    and level shifts without iterating a one-step model.
    """
    m, t = r.shape
    hs = horizon_grid(cfg, step_minutes)
    windows = feature_windows(cfg, step_minutes)
    nf = windows.size
    beta = np.zeros((m, hs.size, nf))
    fitted = np.zeros((m, hs.size), dtype=bool)
    stride = steps_for(cfg.origin_stride_minutes, step_minutes)
    lo = max(1, t - steps_for(cfg.residual_fit_days * MINUTES_PER_DAY, step_minutes))
    origins = np.arange(lo, t, stride if t - lo > 50 * stride else 1)
    if origins.size:
        # Bound the influence of rare huge bursts on the coefficients (a Huber-like cap at
        # 8 robust SDs), while level shifts of ordinary size keep their full weight.
        sd = 1.4826 * nanquantile(np.abs(r[:, lo:]), [0.5], axis=1)[0]
        cap = np.where(np.isfinite(sd) & (sd > 0), 8.0 * sd, np.inf)[:, None]
        r = np.clip(r, -cap, cap)
        feats = recent_features(r, origins, windows)  # (m, O, F)
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


def fit_core(
    y: FloatArray,
    x_full: FloatArray,
    day: IntArray,
    step_minutes: float,
    cfg: Config,
    gram_cache: dict[tuple[int, int], FloatArray],
) -> CoreFit:
    m, t = y.shape
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
    slope = _robust_trend(y, day[:t], span, step_minutes, cfg)
    yd = y - slope[:, None] * (tdays - t_ref)[None, :]
    # The harmonics vary on scales of hours, so the regression runs on block means of
    # about 5 minutes (the block-mean design is exact for a linear model): 5x cheaper.
    blk = max(1, min(round(5.0 / step_minutes), t))
    tb = t // blk
    head = t - tb * blk  # the oldest steps that do not fill a block are left out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yb = np.nanmean(yd[:, head:].reshape(m, tb, blk), axis=2)
    xb = x_full[head:t].reshape(tb, blk, p_all).mean(axis=1)
    w = _recency(tb, step_minutes * blk, cfg)
    obs_b = np.isfinite(yb)
    coef = np.zeros((m, p_all))
    for nc in np.unique(ncols).tolist():
        if nc == 0:
            continue
        rows = ncols == nc
        coef[rows, :nc] = _wls_batch(yb[rows], obs_b[rows], xb[:, :nc], w, gram_cache)
    resid = yd - coef @ x_full[:t].T
    beta = _fit_residual_model(resid, step_minutes, cfg)
    return CoreFit(coef=coef, ncols=ncols, slope=slope, t_ref=t_ref, beta=beta, span_days=span)


def baseline(core: CoreFit, x_full: FloatArray, step_minutes: float) -> FloatArray:
    """Seasonal profile plus trend at every row of x_full, per series: (m, len(x_full))."""
    tdays = np.arange(x_full.shape[0]) * step_minutes / MINUTES_PER_DAY
    return np.asarray(
        core.coef @ x_full.T + core.slope[:, None] * (tdays - core.t_ref)[None, :],
        dtype=np.float64,
    )


@dataclass(frozen=True, eq=False)
class Calibration:
    levels: tuple[float, ...]
    table: FloatArray  # (m, G, nq): quantiles of the normalised error by horizon
    accuracy: list[dict[str, Any]]


def _normal_table(levels: tuple[float, ...], g: int, sd: float) -> FloatArray:
    z = np.array([NormalDist().inv_cdf(q) for q in levels])
    return np.repeat((sd * z)[None, :], g, axis=0)


def _tidy_table(table: FloatArray, levels: tuple[float, ...]) -> FloatArray:
    """Quantiles increasing in q, and intervals not narrowing with the horizon."""
    out = np.sort(table, axis=-1)
    lv = np.asarray(levels)
    upper = lv >= 0.5
    out[..., upper] = np.maximum.accumulate(out[..., upper], axis=-2)
    out[..., ~upper] = np.minimum.accumulate(out[..., ~upper], axis=-2)
    return np.sort(out, axis=-1)


def calibrate(
    y: FloatArray,
    x_full: FloatArray,
    day: IntArray,
    final: CoreFit,
    levels: tuple[float, ...],
    step_minutes: float,
    cfg: Config,
    gram_cache: dict[tuple[int, int], FloatArray],
) -> Calibration:
    """Split-conformal errors: refit on all but the tail of the history, forecast the tail.

    Errors are divided by the forecast's seasonal level so that one table serves the
    busy and the quiet hours (the spread scales with the load), and are kept separate
    per horizon.
    """
    m, t = y.shape
    hs = horizon_grid(cfg, step_minutes)
    g_n = hs.size
    nq = len(levels)
    table = np.full((m, g_n, nq), np.nan)
    accuracy: list[dict[str, Any]] = [{} for _ in range(m)]
    cal_len = min(
        steps_for(cfg.calibration_days * MINUTES_PER_DAY, step_minutes),
        int(t * cfg.calibration_fraction),
    )
    t_c = t - cal_len
    errors: FloatArray | None = None
    naive_lag_days: FloatArray = np.where(final.span_days >= cfg.weekly_min_days, 7.0, 1.0)
    if cal_len >= 2 and t_c >= 2:
        core = fit_core(y[:, :t_c], x_full, day, step_minutes, cfg, gram_cache)
        base = baseline(core, x_full[:t], step_minutes)
        resid = y - base
        stride = steps_for(cfg.origin_stride_minutes, step_minutes)
        if cal_len < 100 * stride:
            stride = 1
        origins = np.arange(t_c, t, stride)
        feats = recent_features(resid, origins, feature_windows(cfg, step_minutes))
        errors = np.full((m, origins.size, g_n), np.nan)
        abs_model = np.full((m, origins.size, g_n), np.nan)
        abs_naive = np.full((m, origins.size, g_n), np.nan)
        for g, h in enumerate(hs.tolist()):
            tgt = origins + h - 1
            ok = np.flatnonzero(tgt < t)
            if ok.size == 0:
                break
            tg = tgt[ok]
            pred = base[:, tg] + np.einsum("moi,mi->mo", feats[:, ok, :], core.beta[:, g])
            yhat = np.maximum(pred, 0.0)
            level = np.maximum(yhat if cfg.scale_by_forecast else base[:, tg], cfg.level_floor)
            err = y[:, tg] - yhat
            errors[:, ok, g] = err / level
            abs_model[:, ok, g] = np.abs(err)
            season = np.round(naive_lag_days * MINUTES_PER_DAY / step_minutes).astype(np.int64)
            lag = season * np.ceil(h / season).astype(np.int64)
            src = tg[None, :] - lag[:, None]
            valid = src >= 0
            naive = np.take_along_axis(y, np.where(valid, src, 0), axis=1)
            abs_naive[:, ok, g] = np.where(valid, np.abs(y[:, tg] - naive), np.nan)
        q = nanquantile(errors, levels, axis=1)  # (nq, m, G)
        table = np.moveaxis(q, 0, -1)
        counts = np.isfinite(errors).sum(axis=1)  # (m, G)
        _fill_short(table, counts, hs, cfg)
        _describe(accuracy, errors, abs_model, abs_naive, hs, y, cal_len, step_minutes,
                  naive_lag_days, cfg)
    fallback = ~np.isfinite(table).all(axis=(1, 2))
    for i in np.flatnonzero(fallback).tolist():
        table[i], accuracy[i] = _fallback_table(y[i], final, i, x_full, levels, g_n,
                                                step_minutes, cfg)
    return Calibration(levels=levels, table=_tidy_table(table, levels), accuracy=accuracy)


def _fill_short(table: FloatArray, counts: IntArray, hs: IntArray, cfg: Config) -> None:
    """Horizons with too few held-out errors borrow the longest well-measured horizon,
    widened like a random walk (sqrt of the horizon ratio, at most threefold)."""
    m, g_n, _ = table.shape
    for i in range(m):
        good = np.flatnonzero(counts[i] >= cfg.min_errors)
        if good.size == 0:
            table[i] = np.nan
            continue
        for g in range(g_n):
            if counts[i, g] >= cfg.min_errors:
                continue
            lower = good[good < g]
            src = int(lower[-1]) if lower.size else int(good[0])
            factor = min(3.0, math.sqrt(max(1.0, hs[g] / hs[src])))
            row = table[i, src]
            mid = float(np.median(row))
            table[i, g] = mid + (row - mid) * factor


def _fallback_table(
    y: FloatArray,
    final: CoreFit,
    i: int,
    x_full: FloatArray,
    levels: tuple[float, ...],
    g_n: int,
    step_minutes: float,
    cfg: Config,
) -> tuple[FloatArray, dict[str, Any]]:
    """History too short for held-out errors: the spread of the data around the fitted
    level, widened by half, or a wide normal band when even that is unavailable."""
    base = (final.coef[i] @ x_full[: y.size].T).astype(np.float64)
    ok = np.isfinite(y)
    if ok.sum() >= cfg.min_errors:
        dev = (y[ok] - base[ok]) / np.maximum(base[ok], cfg.level_floor)
        q = np.quantile(dev, levels) * 1.5
        return np.repeat(q[None, :], g_n, axis=0), {
            "method": "in-sample spread x1.5 (history too short to hold out)",
            "n_errors": int(ok.sum()),
        }
    return _normal_table(levels, g_n, 0.5), {
        "method": "default +-50% normal band (almost no data)",
        "n_errors": int(ok.sum()),
    }


def _coverage(errors: FloatArray, lo_q: float, hi_q: float) -> float | None:
    """Two-fold cross-validated coverage inside the held-out tail: quantiles estimated on
    one half of the origins are checked on the other half."""
    half = errors.shape[0] // 2
    if half < 10:
        return None
    hits = 0
    total = 0
    for a, b in ((slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))):
        q = nanquantile(errors[a], [lo_q, hi_q], axis=0)
        e = errors[b]
        ok = np.isfinite(e) & np.isfinite(q[0])[None, :]
        inside = (e >= q[0][None, :]) & (e <= q[1][None, :]) & ok
        hits += int(inside.sum())
        total += int(ok.sum())
    return hits / total if total else None


def _describe(
    accuracy: list[dict[str, Any]],
    errors: FloatArray,
    abs_model: FloatArray,
    abs_naive: FloatArray,
    hs: IntArray,
    y: FloatArray,
    cal_len: int,
    step_minutes: float,
    naive_lag_days: FloatArray,
    cfg: Config,
) -> None:
    picks: list[tuple[str, int]] = []
    for minutes in REPORT_HORIZONS_MINUTES:
        g = int(np.argmin(np.abs(hs * step_minutes - minutes)))
        if abs(hs[g] * step_minutes - minutes) <= 0.5 * minutes:
            picks.append((f"{hs[g] * step_minutes:g}", g))
    for i in range(errors.shape[0]):
        level = float(np.nanmean(np.abs(y[i, -cal_len:]))) if np.isfinite(y[i]).any() else 0.0
        mae_rel: dict[str, float | None] = {}
        skill: dict[str, float | None] = {}
        for label, g in picks:
            both = np.isfinite(abs_model[i, :, g]) & np.isfinite(abs_naive[i, :, g])
            if both.sum() < cfg.min_errors or level <= 0:
                mae_rel[label] = None
                skill[label] = None
                continue
            mm = float(abs_model[i, both, g].mean())
            mn = float(abs_naive[i, both, g].mean())
            mae_rel[label] = round(mm / level, 4)
            skill[label] = round(mm / mn, 4) if mn > 0 else None
        c80 = _coverage(errors[i], 0.1, 0.9)
        c95 = _coverage(errors[i], 0.025, 0.975)
        accuracy[i] = {
            "method": "split-conformal on the held-out tail of the history",
            "holdout_minutes": cal_len * step_minutes,
            "n_errors": int(np.isfinite(errors[i]).sum()),
            "coverage_80": None if c80 is None else round(c80, 4),
            "coverage_95": None if c95 is None else round(c95, 4),
            "mae_relative_to_mean_load": mae_rel,
            "mae_vs_seasonal_naive": skill,
            "seasonal_naive": "weekly" if naive_lag_days[i] >= 7 else "daily",
            "horizon_unit": "minutes",
        }
