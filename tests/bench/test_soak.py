"""The soak's own arithmetic: the operation mix and the steady-state figures."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from polyclip.bench.soak import floor_trend, parse_mix, steady_state

MIB = 2**20


def test_mix_parses_shares_and_refuses_unknown_or_empty() -> None:
    assert parse_mix("embed=0.6, search=0.4") == {"embed": 0.6, "search": 0.4}
    for bad in ("embed=x", "delete=1", "embed=-1", "embed=0,search=0", "embed"):
        with pytest.raises(argparse.ArgumentTypeError, match="--mix"):
            parse_mix(bad)


def test_steady_state_ignores_the_warm_up_and_measures_the_trend() -> None:
    """A one-off jump in the warm-up and then flat: slope 0; a steady climb: its slope."""
    flat = [{"t_s": 0.0, "rss_bytes": 100 * MIB, "threads": 20.0}] + [
        {"t_s": float(t), "rss_bytes": 300 * MIB, "threads": 30.0 + (t // 60) % 2}
        for t in range(60, 600, 60)
    ]
    s = steady_state(flat, warmup_s=120, stored=2000)
    assert s["rss_slope_mib_per_min"] == 0 and (s["threads_min"], s["threads_max"]) == (30, 31)
    assert s["rss_mib_per_1k_points"] == 100.0  # 200 MiB over the run for 2,000 points
    climb = [{"t_s": float(t), "rss_bytes": (100 + t / 60 * 5) * MIB, "threads": 9.0}
             for t in range(0, 600, 30)]  # fmt: skip
    assert steady_state(climb, warmup_s=120, stored=0)["rss_slope_mib_per_min"] == pytest.approx(5)
    assert steady_state(climb, warmup_s=120, stored=0)[
        "rss_slope_second_half_mib_per_min"
    ] == pytest.approx(5)  # a leak keeps its rate
    assert steady_state(climb, warmup_s=120, stored=0)["rss_anon_slope_mib_per_min"] is None
    split = [{**x, "rss_anon_bytes": x["rss_bytes"] / 2} for x in climb]
    assert steady_state(split, warmup_s=120, stored=0)["rss_anon_slope_mib_per_min"] == 2.5
    levelling = [{"t_s": float(t), "rss_bytes": (100 + 60 * (1 - np.exp(-t / 200))) * MIB}
                 for t in range(0, 1800, 30)]  # fmt: skip
    s = steady_state(levelling, warmup_s=120, stored=0)
    assert 0 < s["rss_slope_second_half_mib_per_min"] < s["rss_slope_mib_per_min"] / 5
    assert steady_state(climb, warmup_s=120, stored=0)["rss_mib_per_1k_points"] is None
    assert steady_state(climb, warmup_s=120, stored=0)["trimmed_mib"] is None
    trims = [{**x, "trimmed_bytes": x["t_s"] * MIB} for x in climb]  # 1 MiB/s handed back
    assert steady_state(trims, warmup_s=120, stored=0)["trimmed_mib"] == 570.0
    assert steady_state(climb[:3], warmup_s=120, stored=0) == {}


def test_floor_trend_sees_through_the_trims_sawtooth() -> None:
    """Memory that rises for 50 s and is trimmed back each minute, sampled every 10 s: flat
    underneath unless a leak lifts the floor. A plain fit over a window that ends high is
    fooled; the floor is not."""
    t = np.arange(0, 1200, 10.0)
    saw = 900 + (t % 60)  # +50 MiB within each minute, back down at each trim
    keep = t <= 650  # ends just before a trim: at the sawtooth's top
    assert np.polyfit(t[keep] / 60, saw[keep], 1)[0] > 0.4  # the plain slope is not zero
    assert abs(floor_trend(t[keep] / 60, saw[keep])) < 0.1
    assert floor_trend(t / 60, saw + 2 * t / 60) == pytest.approx(2, abs=0.1)  # a 2 MiB/min leak
    assert floor_trend(t[:30] / 60, saw[:30]) is None  # 5 minutes: too few windows
