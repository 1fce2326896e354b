"""Vortex tracks for the synthetic clips: the real medicane tracks (hourly centres) or built-in smooth random ones,
resampled to the frame spacing.

A track is float [N, 2] hourly centres (x, y) in pixels of the seed's 1290x420 frame (about 3.5 km per pixel), so
real and random tracks move at the same scale; `clip_centres` cuts T frames out of one and places them in a tile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RANDOM_TRACKS = 24
"""How many built-in random cyclones a data set draws its clips from (the real set has 18)."""
RANDOM_HOURS = 48
RANDOM_SPEED = (2.0, 9.0)
"""Range of the random tracks' speed in frame pixels per hour (the real tracks' median is about 5)."""
_TRACK_TAG = 0x7AC5


def real_tracks(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """(cyclone id, float [N, 2] hourly centres) of every track of a tracks CSV (medicanes_new_windows.csv), in id
    order; the hours are checked to be consecutive (a gap would make the resampled motion jump)."""
    from medvl.data.layouts.clips import read_tracks

    out = []
    for cid, points in sorted(read_tracks(path).items()):
        hours = np.array([(p[0] - points[0][0]).total_seconds() / 3600 for p in points])
        xy = np.array([[p[1], p[2]] for p in points], dtype=np.float64)
        if len(points) < 2:
            continue
        # Resample to whole hours (the file is hourly; this also absorbs a missing hour).
        grid = np.arange(0, hours[-1] + 1e-9, 1.0)
        out.append((cid, np.stack([np.interp(grid, hours, xy[:, 0]), np.interp(grid, hours, xy[:, 1])], axis=1)))
    return out


def random_tracks(seed: int, count: int = RANDOM_TRACKS, hours: int = RANDOM_HOURS) -> list[tuple[str, np.ndarray]]:
    """`count` smooth random tracks: a heading that turns slowly (a sine) at a speed that drifts, hourly centres."""
    rng = np.random.default_rng([seed, _TRACK_TAG])
    out = []
    t = np.arange(hours, dtype=np.float64)
    for k in range(count):
        heading = rng.uniform(0, 2 * np.pi) + rng.uniform(0.3, 1.5) * np.sin(
            rng.uniform(0.05, 0.25) * t + rng.uniform(0, 2 * np.pi)
        )
        speed = rng.uniform(*RANDOM_SPEED) * (1 + 0.3 * np.sin(rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6.3)))
        steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * speed[:, None]
        xy = np.cumsum(steps, axis=0) - steps[0] + rng.uniform([300, 100], [1000, 320])
        out.append((f"random{k + 1:02d}", xy))
    return out


def resample(hourly: np.ndarray, minutes: int) -> np.ndarray:
    """Hourly centres [N, 2] -> centres every `minutes` minutes [(N - 1) * 60 / minutes + 1, 2] (linear)."""
    hours = np.arange(len(hourly), dtype=np.float64)
    fine = np.arange(0, len(hourly) - 1 + 1e-9, minutes / 60)
    return np.stack([np.interp(fine, hours, hourly[:, 0]), np.interp(fine, hours, hourly[:, 1])], axis=1)


def clip_centres(fine: np.ndarray, start: int, frames: int, scale: float, first: np.ndarray) -> np.ndarray:
    """Centres [frames, 2] in tile pixels: the track's frames from `start`, scaled by `scale` (tile pixels per frame
    pixel) about its first point, which is put at `first`."""
    part = fine[start : start + frames]
    return (part - part[0]) * scale + first
