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
    resid: FloatArray  # (m, k) residuals from the profile and trend of the last k steps


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


def _fit_residual_model(
    r: FloatArray, step_minutes: float, cfg: Config
) -> FloatArray:
    """Direct multi-horizon regression of the residual h steps ahead on recent residual means.

    One small ridge regression per horizon of the grid: the coefficients say how much of
    the current deviation from the seasonal profile (last minute, last 10 minutes, last
    hour, last 6 hours) persists h steps later, which captures short-term
    autocorrelation and level shifts without iterating a one-step model.
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
    origins = np.arange(lo, t, stride if t - lo > 50 * stride else 1)
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
    reuse: CoreFit | None = None,
) -> CoreFit:
    """Fit profile, trend and residual model. With ``reuse`` (the fit on the full history,
    when refitting on a prefix for calibration) the trend slope is taken over rather than
    re-estimated (a robust slope on daily medians barely moves when the last days are
    held out); profile and residual model are refitted, so held-out errors stay honest."""
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
    slope = (_robust_trend(y, day[:t], span, step_minutes, cfg) if reuse is None
             else reuse.slope)
    yd = y - slope[:, None] * (tdays - t_ref)[None, :] if np.any(slope != 0) else y
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
    # Residuals are only needed where the residual model and the stored tail look.
    keep = min(t, max(
        steps_for(cfg.residual_fit_days * MINUTES_PER_DAY, step_minutes)
        + int(feature_windows(cfg, step_minutes).max()),
        int(lag_steps(cfg, step_minutes).max(initial=0)) + lag_half(cfg, step_minutes),
    ))
    resid = yd[:, t - keep :] - coef @ x_full[t - keep : t].T
    beta = _fit_residual_model(resid, step_minutes, cfg)
    return CoreFit(coef=coef, ncols=ncols, slope=slope, t_ref=t_ref, beta=beta, span_days=span,
                   resid=resid)


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

