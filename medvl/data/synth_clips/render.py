"""Drawing one synthetic satellite clip: an airmass-like background with drifting cloud fields and, optionally, a
vortex (spiral cloud bands, a dense overcast, a clear eye, a dry slot) whose centre follows given points.

Everything is a sum of smooth analytic fields evaluated per frame, so the clip is continuous in time and a pure
function of its random stream. Latent fields (values in about [0, 1]): `mass` (tropical vs polar air), `dry` (dry
stratospheric air, red in Airmass RGB), `cloud` (high cloud, white). Three channels are mixed as Airmass RGB shows
them (green/blue background, red-orange dry air, whitish cloud); other band counts are fixed random mixtures of the
same fields, so every band carries the vortex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BAND_TAG = 0xBA4D


@dataclass
class Waves:
    """A smooth random field: a sum of plane waves, drifting with a wind."""

    k: np.ndarray  # [M, 2] wave vectors, radians per pixel
    phase: np.ndarray  # [M]
    amp: np.ndarray  # [M]

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, wavelength: tuple[float, float]) -> Waves:
        length = rng.uniform(*wavelength, size=n)
        angle = rng.uniform(0, 2 * np.pi, size=n)
        k = (2 * np.pi / length)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        amp = rng.uniform(0.5, 1.0, size=n)
        return cls(k, rng.uniform(0, 2 * np.pi, size=n), amp / amp.sum())

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        arg = self.k[:, 0, None, None] * x + self.k[:, 1, None, None] * y + self.phase[:, None, None]
        return 0.5 + 0.5 * np.tensordot(self.amp, np.cos(arg), axes=1)


@dataclass
class Vortex:
    radius: float
    """Size of the cloud shield in pixels."""
    eye: float
    arms: int
    tightness: float
    spin: float
    """Radians per frame of the bands' rotation (negative: counterclockwise on screen, as a northern cyclone)."""
    angle: float
    strength: float

    @classmethod
    def draw(cls, rng: np.random.Generator, tile: int) -> Vortex:
        return cls(
            radius=rng.uniform(0.16, 0.3) * tile,
            eye=rng.uniform(0.025, 0.045) * tile,
            arms=int(rng.integers(2, 4)),
            tightness=rng.uniform(1.5, 3.0),
            spin=-rng.uniform(0.03, 0.08),
            angle=rng.uniform(0, 2 * np.pi),
            strength=rng.uniform(0.65, 1.0),
        )

    def fields(self, x: np.ndarray, y: np.ndarray, cx: float, cy: float, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(cloud, dry) of the vortex centred at (cx, cy) in one frame."""
        dx, dy = x - cx, y - cy
        r = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx)
        turn = self.angle + self.spin * frame
        spiral = 0.5 + 0.5 * np.cos(self.arms * (theta - turn) + self.tightness * np.log1p(r / self.eye))
        shield = np.exp(-((r / self.radius) ** 2))
        core = np.exp(-((r / (0.45 * self.radius)) ** 2))
        clear_eye = 1 - np.exp(-((r / self.eye) ** 2))
        cloud = np.clip(core + 0.9 * spiral**2 * shield, 0, 1) * clear_eye * self.strength
        slot = 0.5 + 0.5 * np.cos(theta - turn + np.pi + 0.8 * np.log1p(r / self.eye))
        dry = 0.7 * slot**3 * np.exp(-((r / (1.6 * self.radius)) ** 2)) * (1 - core) + 0.6 * (1 - clear_eye)
        return cloud, dry * self.strength


AIRMASS = np.array(
    [
        # R     G     B
        [0.30, 0.52, 0.28],  # tropical air mass (mass = 1): green
        [0.36, 0.26, 0.62],  # polar air mass (mass = 0): blue-violet
        [0.80, 0.38, 0.12],  # dry stratospheric air: red-orange (added by `dry`)
        [0.86, 0.84, 0.80],  # thick high cloud: off-white (blended in by `cloud`)
    ]
)


def band_mixture(channels: int, band_seed: int) -> np.ndarray:
    """[4, channels] how (tropical, polar, dry, cloud) appear in each band: Airmass RGB for 3, random otherwise."""
    if channels == 3:
        return AIRMASS
    rng = np.random.default_rng([band_seed, _BAND_TAG, channels])
    mix = rng.uniform(0.15, 0.6, size=(4, channels))
    mix[3] = rng.uniform(0.75, 0.95, size=channels)  # cloud is bright in every band
    return mix


def render_clip(
    rng: np.random.Generator, tile: int, frames: int, centres: np.ndarray | None, channels: int, band_seed: int = 0
) -> np.ndarray:
    """uint8 [frames, tile, tile, channels] of one clip; `centres` float [frames, 2] (x, y in tile pixels) of the
    vortex, or None for a clip without one. `band_seed` fixes the mixture of the fields into bands for a data set."""
    y, x = np.mgrid[0:tile, 0:tile].astype(np.float64)
    mass = Waves.draw(rng, 6, (1.5 * tile, 4.0 * tile))
    dry = Waves.draw(rng, 6, (0.8 * tile, 2.5 * tile))
    cloud = Waves.draw(rng, 10, (0.25 * tile, 1.2 * tile))
    wind = rng.normal(0, 0.25, size=2)  # pixels per frame
    cover = rng.uniform(0.45, 0.75)  # cloud-field threshold: higher, fewer clouds
    vortex = Vortex.draw(rng, tile) if centres is not None else None
    mix = band_mixture(channels, band_seed)
    out = np.empty((frames, tile, tile, channels), dtype=np.uint8)
    for t in range(frames):
        xs, ys = x - wind[0] * t, y - wind[1] * t
        m = mass(xs, ys)
        d = np.clip((dry(xs, ys) - 0.55) * 2.0, 0, 1) * 0.5
        c = np.clip((cloud(xs, ys) - cover) / (1 - cover), 0, 1) ** 0.7 * 0.8
        if vortex is not None:
            vc, vd = vortex.fields(x, y, float(centres[t, 0]), float(centres[t, 1]), t)
            c = np.maximum(c * (1 - vd), vc)
            d = np.clip(d + vd, 0, 1)
        base = m[..., None] * mix[0] + (1 - m[..., None]) * mix[1]
        base = base * (1 - 0.6 * d[..., None]) + 0.6 * d[..., None] * mix[2]
        img = base * (1 - c[..., None]) + c[..., None] * mix[3]
        img = img + rng.normal(0, 0.015, size=img.shape)
        out[t] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return out
