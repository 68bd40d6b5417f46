"""Calibration of the fast path's quantiles: split-conformal errors on the held-out tail of
the history, their finite-sample levels, and the accuracy each series reports.

Data published in blocks (ServeGen: one rate per 10-minute window, spread evenly over its
minutes) is calibrated per position in the block as well: from an origin inside a block the
next steps are already known, from an origin on a block boundary none is, so one table
pooled over the positions is too wide inside the blocks and far too narrow on their
boundaries (issue #11: 28 % coverage of the 80 % interval one step after a boundary).
``block_structure`` detects the blocks from the history itself; ``Calibration.phase_table``
holds one table per position.

Moved out of :mod:`forecasting._core` (which it imports; ``_core`` never imports it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ._core import (
    REPORT_HORIZONS_MINUTES,
    Config,
    CoreFit,
    baseline,
    blend_weights,
    feature_windows,
    fit_core,
    horizon_grid,
    lag_features,
    lag_half,
    lag_steps,
    nanquantile,
    recent_features,
    steps_for,
)
from ._time import MINUTES_PER_DAY, FloatArray, IntArray


@dataclass(frozen=True, eq=False)
class Calibration:
    levels: tuple[float, ...]
    table: FloatArray  # (m, G, nq): quantiles of the normalised error by horizon
    accuracy: list[dict[str, Any]]
    blend: FloatArray  # (m, G, 1 + L): weights of the model and of each seasonal lag
    #: Steps per publication block by series (1: the data changes at every step), and the
    #: position (index modulo the block) where blocks start, in the fitted history's steps.
    block: IntArray | None = None
    block_offset: IntArray | None = None
    #: (m, P, G, nq), P the largest block of the batch: the table for origins at each
    #: position in the block, position (origin - block_offset) % block; 0 is an origin on a
    #: block boundary (nothing of the target's block seen). Rows of series without blocks
    #: (and rows past a series' own block) repeat ``table``.
    phase_table: FloatArray | None = None

    def table_at(self, i: int, origin: int) -> FloatArray:
        """The (G, nq) table of series ``i`` for a forecast from step ``origin``."""
        w = 1 if self.block is None else int(self.block[i])
        if self.phase_table is None or self.block_offset is None or w <= 1:
            return np.asarray(self.table[i], dtype=np.float64)
        ph = block_phase(origin, w, int(self.block_offset[i]))
        return np.asarray(self.phase_table[i, ph], dtype=np.float64)


def block_phase(origin: int, block: int, offset: int) -> int:
    """Position of ``origin`` in its publication block: 0 on a boundary (the step before it
    closed a block), else the number of the block's steps already seen."""
    return 0 if block <= 1 else (origin - offset) % block


def block_structure(y: FloatArray, max_block: int) -> tuple[IntArray, IntArray]:
    """Publication blocks of each series, ((m,) steps per block, (m,) offset of the block
    starts modulo the block); 1 and 0 for a series that changes at any step.

    A series is taken as published in blocks of W steps when at least 98 % of its value
    changes (between consecutive observed steps) fall on one position modulo W, W >= 2 is
    the largest such spacing (the gcd of the distances between changes, or their most
    common distance when a few stray changes break the gcd), and at least half of the
    block boundaries show a change (a mostly flat series is not a block series).
    """
    m, t = y.shape
    block = np.ones(m, dtype=np.int64)
    offset = np.zeros(m, dtype=np.int64)
    if t < 3:
        return block, offset
    a, b = y[:, :-1], y[:, 1:]
    fin = np.isfinite(a) & np.isfinite(b)
    changed = fin & (a != b)
    n_pairs = fin.sum(axis=1)
    n_changes = changed.sum(axis=1)
    for i in range(m):
        # Blocks of 2 or more steps change at most every other step; data that changes more
        # often has no blocks (the common case, settled without looking further).
        if n_changes[i] < 20 or n_changes[i] > 0.6 * n_pairs[i]:
            continue
        c = np.flatnonzero(changed[i]) + 1  # steps where a new value starts
        d = np.diff(c)
        w = int(np.gcd.reduce(d))
        if w < 2:
            vals, cnt = np.unique(d, return_counts=True)
            w = int(vals[int(np.argmax(cnt))])
        if w < 2 or w > max_block:
            continue
        pos = np.bincount(c % w, minlength=w)
        k = int(np.argmax(pos))
        if pos[k] < 0.98 * c.size or c.size < 0.5 * n_pairs[i] / w:
            continue
        block[i] = w
        offset[i] = k
    return block, offset


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
    # The final fit rescaled the history before a lasting level change to the new level
    # (_core._adapt_history). The held-out errors must describe that model: a prefix fit
    # that has not seen the change forecasts the old level from origins after it, and its
    # errors (over a forecast that may fall to the level floor) made the quantiles tens of
    # times the load for two days after a step. So the calibration sees the same rescaled
    # history (raw units; the trend, taken over from the final fit, is left as it is).
    if final.level_factor is not None and final.level_notes is not None:
        changed = [i for i in range(m) if final.level_factor[i] != 1.0
                   and "level_change_step" in final.level_notes[i]]
        if changed:
            y = y.copy()
            for i in changed:
                y[i, : int(final.level_notes[i]["level_change_step"])] *= final.level_factor[i]
    hs = horizon_grid(cfg, step_minutes)
    g_n = hs.size
    nq = len(levels)
    table = np.full((m, g_n, nq), np.nan)
    blend = np.repeat(blend_weights(cfg, hs, step_minutes)[None], m, axis=0)
    accuracy: list[dict[str, Any]] = [{} for _ in range(m)]
    cal_len = min(
        steps_for(cfg.calibration_days * MINUTES_PER_DAY, step_minutes),
        int(t * cfg.calibration_fraction),
    )
    t_c = t - cal_len
    errors: FloatArray | None = None
    block = np.ones(m, dtype=np.int64)
    block_offset = np.zeros(m, dtype=np.int64)
    phase_table: FloatArray | None = None
    naive_lag_days: FloatArray = np.where(final.span_days >= cfg.weekly_min_days, 7.0, 1.0)
    if cal_len >= 2 and t_c >= 2:
        core = fit_core(y[:, :t_c], x_full, day, step_minutes, cfg, gram_cache, reuse=final)
        windows = feature_windows(cfg, step_minutes)
        lags = lag_steps(cfg, step_minutes)
        half = lag_half(cfg, step_minutes)
        # Only the stretch the features of the held-out origins can reach is computed.
        off = max(0, t_c - max(int(windows.max()), int(lags.max(initial=0)) + half))
        base = baseline(core, x_full[off:t], step_minutes, off)
        resid = y[:, off:] - base
        stride = steps_for(cfg.origin_stride_minutes, step_minutes)
        if cal_len < 100 * stride:
            stride = 1
        origins = np.arange(t_c, t, stride)
        feats = recent_features(resid, origins - off, windows)
        lagf = lag_features(resid, origins - off, hs, lags, half)  # (m, G, O, L)
        errors = np.full((m, origins.size, g_n), np.nan)
        abs_model = np.full((m, origins.size, g_n), np.nan)
        abs_naive = np.full((m, origins.size, g_n), np.nan)
        for g, h in enumerate(hs.tolist()):
            tgt = origins + h - 1
            ok = np.flatnonzero(tgt < t)
            if ok.size == 0:
                break
            tg = tgt[ok]
            corr = _residual_correction(feats[:, ok, :], core, g, origins[ok])
            comps = np.concatenate(
                (corr[..., None], lagf[:, g, ok, :]), axis=2)  # (m, O, 1 + L) corrections
            bt = base[:, tg - off]
            pred = bt + np.einsum("moc,mc->mo", comps, blend[:, g])
            yhat = np.maximum(pred, 0.0)
            level = np.maximum(yhat if cfg.scale_by_forecast else bt, cfg.level_floor)
            err = y[:, tg] - yhat
            errors[:, ok, g] = err / level
            abs_model[:, ok, g] = np.abs(err)
            season = np.round(naive_lag_days * MINUTES_PER_DAY / step_minutes).astype(np.int64)
            lag = season * np.ceil(h / season).astype(np.int64)
            src = tg[None, :] - lag[:, None]
            valid = src >= 0
            naive = np.take_along_axis(y, np.where(valid, src, 0), axis=1)
            abs_naive[:, ok, g] = np.where(valid, np.abs(y[:, tg] - naive), np.nan)
        counts = np.isfinite(errors).sum(axis=1)  # (m, G)
        q = nanquantile(errors, conformal_levels(levels, effective_counts(errors)),
                        axis=1)  # (nq, m, G)
        table = np.moveaxis(q, 0, -1)
        _fill_short(table, counts, hs, cfg)
        _describe(accuracy, errors, abs_model, abs_naive, hs, y, cal_len, step_minutes,
                  naive_lag_days, cfg)
        block, block_offset = block_structure(
            y[:, :t_c], max(2, min(t_c // 20, steps_for(MINUTES_PER_DAY / 4, step_minutes))))
        blocky = np.flatnonzero(block > 1)
        if blocky.size:
            # Per-position quantiles where measured, NaN elsewhere (the pooled table, once
            # tidied, fills the rest below).
            phase_table = np.full((m, int(block[blocky].max()), g_n, nq), np.nan)
            _phase_tables(phase_table, blocky, block, block_offset, y, core, base, resid,
                          off, t_c, hs, blend, levels, step_minutes, cfg)
            for i in blocky.tolist():
                accuracy[i]["publication_block_minutes"] = float(block[i] * step_minutes)
    fallback = ~np.isfinite(table).all(axis=(1, 2))
    for i in np.flatnonzero(fallback).tolist():
        table[i], accuracy[i] = _fallback_table(y[i], final, i, x_full, levels, g_n,
                                                step_minutes, cfg)
        block[i] = 1
    table = _tidy_table(table, levels)
    if phase_table is not None:
        phase_table = _complete_phase_table(phase_table, table, block, levels)
    return Calibration(levels=levels, table=table, accuracy=accuracy, blend=blend,
                       block=block, block_offset=block_offset, phase_table=phase_table)


def _residual_correction(feats: FloatArray, core: CoreFit, g: int, origins: IntArray,
                         rows: IntArray | None = None) -> FloatArray:
    """The residual model's correction (m, O) at grid horizon g from ``origins``: the
    boundary model (CoreFit.boundary_beta) for origins on a block boundary, as predict."""
    sel = slice(None) if rows is None else rows
    corr = np.einsum("moi,mi->mo", feats, core.beta[sel, g])
    if core.boundary_beta is not None and core.block is not None:
        assert core.block_offset is not None
        w = core.block[sel]
        on = (w[:, None] > 1) & ((origins[None, :] - core.block_offset[sel][:, None])
                                  % np.maximum(w, 1)[:, None] == 0)
        if on.any():
            corr = np.where(on, np.einsum("moi,mi->mo", feats, core.boundary_beta[sel, g]),
                            corr)
    return np.asarray(corr, dtype=np.float64)


def _complete_phase_table(raw: FloatArray, table: FloatArray, block: IntArray,
                          levels: tuple[float, ...]) -> FloatArray:
    """The per-position tables (m, P, G, nq) from the measured cells of ``raw`` (NaN
    elsewhere) and the tidied pooled ``table``: unmeasured cells (long horizons, positions
    a series does not have, series without blocks) take the pooled table, never narrower
    than the position's longest measured horizon; quantiles increase in q. Widths are
    not forced to grow with the horizon among the measured cells: from a block boundary
    the nearest steps can be the hardest (the point forecast leans on the last value,
    which the next block replaces)."""
    out = np.where(np.isfinite(raw), raw, table[:, None])
    lv = np.asarray(levels)
    upper, lower = lv > 0.5, lv < 0.5
    for i in range(out.shape[0]):
        w = int(block[i])
        if w <= 1:
            out[i] = table[i]
            continue
        out[i, w:] = table[i]
        measured = np.flatnonzero(np.isfinite(raw[i, :w]).all(axis=(0, 2)))
        if measured.size == 0:
            continue
        last = int(measured.max())
        tail = out[i, :w, last + 1 :]
        edge = out[i, :w, last][:, None, :]
        tail[..., upper] = np.maximum(tail[..., upper], edge[..., upper])
        tail[..., lower] = np.minimum(tail[..., lower], edge[..., lower])
    return np.sort(out, axis=-1)


def _phase_tables(
    out: FloatArray,
    rows: IntArray,
    block: IntArray,
    block_offset: IntArray,
    y: FloatArray,
    core: CoreFit,
    base: FloatArray,
    resid: FloatArray,
    off: int,
    t_c: int,
    hs: IntArray,
    blend: FloatArray,
    levels: tuple[float, ...],
    step_minutes: float,
    cfg: Config,
) -> None:
    """Fill ``out`` (m, P, G, nq) for the block series ``rows``: quantiles of the held-out
    errors from every origin of the tail, split by the origin's position in its block, up
    to six blocks ahead (beyond, the position no longer matters: the pooled table serves).
    Cells with fewer than ``min_errors`` errors are left as they are."""
    t = y.shape[1]
    origins = np.arange(t_c, t, dtype=np.int64)
    w_max = int(block[rows].max())
    gsel = np.flatnonzero(hs <= 6 * w_max)
    if gsel.size == 0 or origins.size == 0:
        return
    err = _held_out_errors(y[rows], core, rows, base[rows], resid[rows], off, origins,
                           hs, gsel, blend[rows], step_minutes, cfg)  # (r, O, Gs)
    for r, i in enumerate(rows.tolist()):
        w, k0 = int(block[i]), int(block_offset[i])
        g_i = np.flatnonzero(hs[gsel] <= 6 * w)
        n_max = -(-origins.size // w)
        per = np.full((w, n_max, g_i.size), np.nan)  # (phase, origins of that phase, Gs)
        for ph in range(w):
            first = (ph + k0 - t_c) % w  # first origin index with this position
            e = err[r, first::w][:, g_i]
            per[ph, : e.shape[0]] = e
        counts = np.isfinite(per).sum(axis=1)  # (w, Gs)
        q = np.moveaxis(nanquantile(per, conformal_levels(levels, effective_counts(per)),
                                    axis=1), 0, -1)  # (w, Gs, nq)
        recent = max(cfg.min_errors, steps_for(RECENT_SPREAD_MINUTES, step_minutes) // w)
        q = q * recent_spread_ratio(per, recent, cfg.min_errors)[..., None]
        good = (counts >= cfg.min_errors)[..., None] & np.isfinite(q)
        tab = out[i, :w]  # a view: (w, G, nq)
        cols = gsel[g_i]
        tab[:, cols] = np.where(good, q, tab[:, cols])


#: The per-position tables follow the spread of the held-out errors of the last day (see
#: :func:`recent_spread_ratio`): a whole day, so that a spread that varies with the time of
#: day does not bias the ratio (the last 12 hours did: 80 % coverage 0.76 on stationary
#: synthetic blocks, tests/test_calibration.py), and short enough to follow the
#: day-to-day swings (144 errors per position of a 10-minute block at 1-minute steps).
RECENT_SPREAD_MINUTES = 24 * 60.0


def recent_spread_ratio(errors: FloatArray, recent: int, min_errors: int) -> FloatArray:
    """How much wider the errors of the most recent origins are than those of all the
    held-out origins: median |e| over the last ``recent`` origins (axis 1, chronological)
    over median |e| over all, (rows, horizons) from ``errors`` (rows, origins, horizons);
    1 where either median rests on fewer than ``min_errors`` errors or is not positive.

    The spread of block-published traces is not stationary: ServeGen's relative noise
    swings two- to fivefold from one day to the next, so quantiles pooled over a 3-day
    holdout describe an average day, not the one the forecast is made in, and their 80 %
    interval covered 0.74-0.77 in the hours after the fit (issue #11). Scaling the
    conformal quantiles by this ratio keeps their shape (tails included, which a per-error
    standardisation by a trailing scale made heavier: 95 % up to 0.99) and follows the
    current spread. On stationary data the ratio is 1 give or take its sampling noise
    (0.98 on average, 0.86-1.08 per series, on the synthetic block series of the tests).
    """
    a = np.abs(errors)
    tail = a[:, -recent:]
    n_all = np.isfinite(a).sum(axis=1)
    n_tail = np.isfinite(tail).sum(axis=1)
    med_all = nanquantile(a, [0.5], axis=1)[0]
    med_tail = nanquantile(tail, [0.5], axis=1)[0]
    ok = ((n_all >= min_errors) & (n_tail >= min_errors) & (med_all > 0) & (med_tail > 0)
          & np.isfinite(med_all) & np.isfinite(med_tail))
    return np.where(ok, med_tail / np.where(ok, med_all, 1.0), 1.0)


def _held_out_errors(
    y: FloatArray,
    core: CoreFit,
    rows: IntArray,
    base: FloatArray,
    resid: FloatArray,
    off: int,
    origins: IntArray,
    hs: IntArray,
    gsel: IntArray,
    blend: FloatArray,
    step_minutes: float,
    cfg: Config,
) -> FloatArray:
    """Normalised errors (m, O, len(gsel)) of the held-out fit's forecasts from ``origins``
    at the horizons ``hs[gsel]``, computed as ``calibrate`` computes them."""
    m, t = y.shape
    windows = feature_windows(cfg, step_minutes)
    lags = lag_steps(cfg, step_minutes)
    half = lag_half(cfg, step_minutes)
    feats = recent_features(resid, origins - off, windows)
    # The seasonal lags only where they carry weight (not below blend_from_minutes).
    lagf = np.zeros((m, gsel.size, origins.size, lags.size))  # (m, Gs, O, L)
    weighted = np.flatnonzero(np.abs(blend[:, gsel, 1:]).sum(axis=(0, 2)) > 0)
    if weighted.size:
        lagf[:, weighted] = lag_features(resid, origins - off, hs[gsel[weighted]], lags, half)
    errors = np.full((m, origins.size, gsel.size), np.nan)
    for j, g in enumerate(gsel.tolist()):
        tgt = origins + int(hs[g]) - 1
        ok = np.flatnonzero(tgt < t)
        if ok.size == 0:
            break
        tg = tgt[ok]
        comps = np.concatenate(
            (_residual_correction(feats[:, ok, :], core, g, origins[ok], rows)[..., None],
             lagf[:, j, ok, :]), axis=2)
        pred = base[:, tg - off] + np.einsum("moc,mc->mo", comps, blend[:, g])
        yhat = np.maximum(pred, 0.0)
        level = np.maximum(yhat if cfg.scale_by_forecast else base[:, tg - off],
                           cfg.level_floor)
        errors[:, ok, j] = (y[:, tg] - yhat) / level
    return errors


def effective_counts(errors: FloatArray) -> FloatArray:
    """Effective number of independent errors per (series, horizon) among the held-out
    origins, (m, G): n (1 - rho) / (1 + rho) with rho the correlation of the errors of
    consecutive origins (an AR(1) approximation; nearby origins share most of their
    error)."""
    a, b = errors[:, :-1], errors[:, 1:]
    ok = np.isfinite(a) & np.isfinite(b)
    k = np.maximum(ok.sum(axis=1), 1)
    a0 = np.where(ok, a, 0.0)
    b0 = np.where(ok, b, 0.0)
    ma, mb = a0.sum(axis=1) / k, b0.sum(axis=1) / k
    da = np.where(ok, a - ma[:, None], 0.0)
    db = np.where(ok, b - mb[:, None], 0.0)
    den = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    rho = np.where(den > 0, (da * db).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)
    rho = np.clip(rho, 0.0, 0.999)
    n = np.isfinite(errors).sum(axis=1).astype(np.float64)
    return np.asarray(np.clip(n * (1.0 - rho) / (1.0 + rho), 1.0, np.maximum(n, 1.0)),
                      dtype=np.float64)


def conformal_levels(levels: tuple[float, ...], n_eff: FloatArray) -> FloatArray:
    """Split-conformal finite-sample levels, (nq, m, G): the upper quantile q of n errors
    is taken at ceil(q (n + 1)) / n (the lower one symmetrically), with n the effective
    number of independent errors."""
    out = np.empty((len(levels), *n_eff.shape))
    for j, q in enumerate(levels):
        tail = min(q, 1.0 - q)
        adj = 1.0 - np.ceil((1.0 - tail) * (n_eff + 1.0)) / n_eff  # adjusted tail mass
        adj = np.clip(adj, 0.0, tail)
        out[j] = adj if q < 0.5 else (1.0 - adj if q > 0.5 else q)
    return out


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


def _coverage(errors: FloatArray, lo_q: float, hi_q: float) -> list[float | None]:
    """Two-fold cross-validated coverage inside the held-out tail, per series: quantiles
    estimated on one half of the origins are checked on the other half.
    ``errors`` is (m, origins, horizons)."""
    m = errors.shape[0]
    half = errors.shape[1] // 2
    if half < 10:
        return [None] * m
    hits = np.zeros(m)
    total = np.zeros(m)
    for a, b in ((slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))):
        q = nanquantile(errors[:, a], [lo_q, hi_q], axis=1)  # (2, m, G)
        e = errors[:, b]
        ok = np.isfinite(e) & np.isfinite(q[0])[:, None, :]
        inside = (e >= q[0][:, None, :]) & (e <= q[1][:, None, :]) & ok
        hits += inside.sum(axis=(1, 2))
        total += ok.sum(axis=(1, 2))
    return [float(h / n) if n else None for h, n in zip(hits, total, strict=True)]


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
    c80s = _coverage(errors, 0.1, 0.9)
    c95s = _coverage(errors, 0.025, 0.975)
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
        c80, c95 = c80s[i], c95s[i]
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
