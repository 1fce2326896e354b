"""Normal chest anatomy of the synthetic radiographs, drawn as a density (X-ray attenuation) map.

Contract: `Frontal.build(rng, size, ...)` and `Lateral.build(rng, size, ...)` draw a normal chest of random habitus at
`size` x `size` pixels into `density` (float32; 0 = air, about 1 = soft tissue, more = bone or metal) and keep the
geometry the finding drawers need (lung masks, hila, heart, diaphragm). Coordinates are normalized: x and y in
[0, 1], x to the image right, y down. The frontal view is PA: the patient's right lung is on the image LEFT; the
lateral view faces left (anterior = image left). `expose(density, rng)` turns a density map into a uint8 radiograph
with a random pose (shift, rotation, scale), exposure, gamma, blur and noise. Everything is vectorized numpy plus
Pillow strokes, drawn at the output size directly; all randomness comes from the rng passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SIDES: tuple[str, str] = ("right", "left")
SIGN: dict[str, float] = {"right": -1.0, "left": 1.0}  # patient's right is on the image left (PA view)
MM_PER_THORAX = 280.0  # inner thoracic width in mm, to turn finding sizes in mm into image units

Point = tuple[float, float]


# ------------------------------------------------------------------------------------------------------ primitives
@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] as float32 (x, y) arrays of shape (size, size); cached per process."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(c, c)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def ramp(d: np.ndarray | float, width: float) -> np.ndarray:
    """Soft step: 0 where d < -width/2, 1 where d > width/2, linear between (cheap anti-aliased edge)."""
    return np.clip(np.asarray(d, dtype=np.float32) * np.float32(1.0 / width) + np.float32(0.5), 0.0, 1.0)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise (about unit variance): a cells x cells Gaussian grid upsampled bicubically."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((size, size), Image.BICUBIC), dtype=np.float32)


def blur(a: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding (numpy only; Pillow cannot blur float images)."""
    if sigma_px < 0.25:
        return a
    r = max(1, int(np.ceil(2.5 * sigma_px)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / sigma_px) ** 2)
    k /= k.sum()
    h, w = a.shape
    p = np.pad(a, ((r, r), (0, 0)), mode="edge")
    out = sum(k[i] * p[i : i + h] for i in range(2 * r + 1))
    p = np.pad(out, ((0, 0), (r, r)), mode="edge")
    return sum(k[i] * p[:, i : i + w] for i in range(2 * r + 1)).astype(np.float32)


def bezier(points: Sequence[Point], n: int = 24) -> list[Point]:
    """Points along the Bezier curve with the given control points (any degree)."""
    t = np.linspace(0.0, 1.0, n)[:, None, None]
    cur = np.broadcast_to(np.asarray(points, dtype=np.float64), (n, len(points), 2))
    while cur.shape[1] > 1:  # de Casteljau, vectorized over t
        cur = (1 - t) * cur[:, :-1] + t * cur[:, 1:]
    pts = cur[:, 0]
    return [(float(a), float(b)) for a, b in pts.reshape(-1, 2)]


class Strokes:
    """A float layer to draw lines, ellipses and boxes on in normalized coordinates (Pillow 'F' image)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.image = Image.new("F", (size, size), 0.0)
        self.draw = ImageDraw.Draw(self.image)

    def _px(self, pts: Sequence[Point]) -> list[Point]:
        return [(x * self.size, y * self.size) for x, y in pts]

    def width(self, w: float) -> int:
        return max(1, int(round(w * self.size)))

    def line(self, pts: Sequence[Point], width: float, value: float) -> None:
        self.draw.line(self._px(pts), fill=float(value), width=self.width(width))

    def bone(self, pts: Sequence[Point], width: float, value: float) -> None:
        """A band with brighter cortical edges (a rib or clavicle seen end-on at its borders)."""
        self.line(pts, width, value)
        inner = self.width(width) - 2
        if inner >= 1:
            self.draw.line(self._px(pts), fill=float(value) * 0.6, width=inner)

    def ellipse(self, center: Point, rx: float, ry: float, value: float, outline: float | None = None) -> None:
        (x, y), s = center, self.size
        box = [(x - rx) * s, (y - ry) * s, (x + rx) * s, (y + ry) * s]
        self.draw.ellipse(box, fill=float(value), outline=None if outline is None else float(outline))

    def box(self, center: Point, half_w: float, half_h: float, value: float, radius: float = 0.0) -> None:
        (x, y), s = center, self.size
        self.draw.rounded_rectangle(
            [(x - half_w) * s, (y - half_h) * s, (x + half_w) * s, (y + half_h) * s],
            radius=radius * s,
            fill=float(value),
        )

    def array(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.float32)


def _radial_vessels(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, center: Point, warp: np.ndarray, reach: float
) -> np.ndarray:
    """Branching-looking vessel rays from a hilum: peaked angular noise, bent by `warp`, fading with distance."""
    dx, dy = x - center[0], y - center[1]
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx) + warp * np.float32(0.35)
    out = np.zeros_like(x)
    # Few thick trunks near the hilum, more and thinner branches farther out (so rays do not meet in a star).
    for k, weight, start in ((28, 1.0, 0.03), (64, 0.8, 0.07), (120, 0.6, 0.12)):
        peaks = rng.random(k + 1).astype(np.float32) ** 6
        peaks[-1] = peaks[0]  # periodic
        pos = (theta + np.pi) * np.float32(k / (2 * np.pi)) + np.float32(rng.random() * k)
        ray = np.interp(pos.ravel() % k, np.arange(k + 1, dtype=np.float32), peaks).reshape(x.shape)
        out += weight * ray * ramp(r - start, 0.04)
    breaks = np.clip(0.75 + 0.5 * smooth_noise(rng, x.shape[0], 14), 0, 1)
    return out * breaks * np.exp(-r / np.float32(reach))


def lung_markings(rng: np.random.Generator, size: int, hila: Sequence[tuple[Point, float]]) -> np.ndarray:
    """Vessels from each (hilum, reach) plus fine parenchymal texture; drawn at half size above 128 px (vessels are
    a few pixels wide anyway) and upsampled, which halves the cost of the most expensive layer."""
    small = size // 2 if size >= 128 else size
    x, y = grid(small)
    warp = smooth_noise(rng, small, 6)
    marks = sum(_radial_vessels(rng, x, y, center, warp, reach) for center, reach in hila)
    marks = marks + 0.15 * smooth_noise(rng, small, max(8, small // 4))
    if small == size:
        return marks.astype(np.float32)
    return np.asarray(
        Image.fromarray(marks.astype(np.float32), "F").resize((size, size), Image.BICUBIC), dtype=np.float32
    )


# -------------------------------------------------------------------------------------------------------- frontal
@dataclass
class Frontal:
    """A normal PA chest: density map plus the geometry findings are drawn against."""

    size: int
    x: np.ndarray
    y: np.ndarray
    cx: float
    thorax: float
    """Half the inner thoracic width at the bases (the CTR denominator / 2)."""
    apex: float
    med: float
    """Half-width of the mediastinum (medial lung border)."""
    dome: dict[str, float]
    costophrenic: dict[str, float]
    lung: dict[str, np.ndarray]
    edge_dist: dict[str, np.ndarray]
    """Horizontal distance to the lateral lung edge (small at the apex and the lateral wall)."""
    hilum: dict[str, Point]
    heart: tuple[float, float, float, float, float]
    """(center x, center y, half width across, semi-axis a, semi-axis b) of the cardiac ellipse."""
    carina: float
    density: np.ndarray
    markings: np.ndarray
    marking_gain: np.ndarray
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def mm(self) -> float:
        """One millimetre in normalized image units."""
        return 2 * self.thorax / MM_PER_THORAX

    def height(self, side: str) -> float:
        return self.costophrenic[side] - self.apex

    def lateral_wall(self, side: str, y: np.ndarray | float) -> np.ndarray | float:
        """Distance from the midline to the lateral lung border at height y."""
        v = np.clip((np.asarray(y) - self.apex) / self.height(side), 0.0, 1.0)
        return self.thorax * (0.84 + 0.16 * v)

    def point(self, side: str, u: float, v: float) -> Point:
        """Image point at fraction u (medial 0 -> lateral 1) across and v (apex 0 -> base 1) down a hemithorax."""
        y = self.apex + v * self.height(side)
        lat = float(self.lateral_wall(side, y))
        return self.cx + SIGN[side] * (self.med + u * (lat - self.med)), y

    def dome_y(self, side: str, x: np.ndarray) -> np.ndarray:
        """Lower lung border (the hemidiaphragm) at x: highest mid-hemithorax, deepest at the costophrenic angle."""
        dx = (x - self.cx) * SIGN[side]
        lat = self.thorax
        u = (dx - self.med) / (lat - self.med)
        top, cp = self.dome[side], self.costophrenic[side]
        lateral = top + (cp - top) * np.clip((u - 0.45) / 0.55, 0, None) ** 2
        medial = top + 0.05 * np.clip((0.45 - u) / 0.45, 0, None) ** 2
        return np.where(u >= 0.45, lateral, medial).astype(np.float32)

    def add(self, layer: np.ndarray, amount: float) -> None:
        self.density += np.float32(amount) * layer

    def final_density(self, marking_amount: float = 0.22) -> np.ndarray:
        lungs = self.lung["right"] + self.lung["left"]
        return self.density + np.float32(marking_amount) * self.markings * self.marking_gain * lungs

    @classmethod
    def build(
        cls, rng: np.random.Generator, size: int, ctr: float | None = None, dome_lift: dict[str, float] | None = None
    ) -> Frontal:
        """Draw a normal PA chest. `ctr`: cardiothoracic ratio (None = a normal one); `dome_lift`: raise a
        hemidiaphragm (volume loss) by this much per side."""
        x, y = grid(size)
        w = max(1.2 / size, 0.006)  # edge softness: about one pixel, never aliased
        cx = 0.5
        thorax = float(rng.uniform(0.33, 0.39))
        apex = float(rng.uniform(0.07, 0.11))
        med = float(rng.uniform(0.045, 0.06))
        dome_r = float(rng.uniform(0.65, 0.71))
        dome = {"right": dome_r, "left": dome_r + float(rng.uniform(0.01, 0.04))}
        for side, lift in (dome_lift or {}).items():
            dome[side] -= lift
        costophrenic = {s: dome[s] + float(rng.uniform(0.07, 0.10)) for s in SIDES}
        habitus = float(rng.uniform(0.85, 1.2))
        normal_ctr = float(rng.uniform(0.39, 0.5))  # always drawn, so the rest of the anatomy does not shift
        ctr = normal_ctr if ctr is None else ctr

        chest = cls(
            size=size,
            x=x,
            y=y,
            cx=cx,
            thorax=thorax,
            apex=apex,
            med=med,
            dome=dome,
            costophrenic=costophrenic,
            lung={},
            edge_dist={},
            hilum={},
            heart=(0, 0, 0, 0, 0),
            carina=apex + 0.3 * (costophrenic["right"] - apex),
            density=np.zeros_like(x),
            markings=np.zeros_like(x),
            marking_gain=np.ones_like(x),
        )
        ax = np.abs(x - cx)

        # Body: neck, rounded shoulders, chest wall; soft tissue thins toward the skin.
        body_half = thorax * 1.2
        shoulder_y, crown = apex + 0.07, apex - float(rng.uniform(0.03, 0.06))
        shoulder_half = thorax * 1.34
        yy = y[:, :1]
        # Trapezius: nearly flat from the neck, rounding off at the shoulder tip.
        rise = np.clip((yy - crown) / (shoulder_y - crown), 0, 1) ** 0.5
        half_width = np.where(
            yy < shoulder_y,
            0.1 + (shoulder_half - 0.1) * rise,
            shoulder_half + (body_half - shoulder_half) * np.clip((yy - shoulder_y) / 0.12, 0, 1),
        )
        neck = ramp(0.085 - ax, 2 * w)
        body = np.maximum(ramp(half_width - ax, 2 * w), neck)
        top = np.maximum(ramp(yy - crown, 2 * w), neck)
        thick = np.sqrt(np.clip(1 - (ax / (np.maximum(half_width, 0.09) * 1.04)) ** 2, 0, 1))
        chest.density = 0.9 * habitus * body * np.maximum(thick, 0.8 * neck)

        # Lungs: rounded apex, lateral wall, mediastinal border, diaphragm dome with a sharp costophrenic angle.
        # Inside a lung the density is set to that of aerated lung (brighter at the apex, under the shoulders).
        for side in SIDES:
            dx = (x - cx) * SIGN[side]
            height = costophrenic[side] - apex
            v = (y[:, :1] - apex) / height
            lat = thorax * (0.84 + 0.16 * np.clip(v, 0, 1))
            mid = (lat + med) / 2
            half = (lat - med) / 2 * np.sqrt(np.clip(v / 0.2, 0, 1))
            inside = half - np.abs(dx - mid)
            lung = ramp(inside, w) * ramp(chest.dome_y(side, x) - y, w)
            chest.lung[side] = lung
            chest.edge_dist[side] = (mid + half - dx).astype(np.float32)
            across = np.clip(np.abs(dx - mid) / (half + 1e-3), 0, 1)
            level = habitus * (0.24 + 0.1 * np.clip(1 - v / 0.35, 0, 1) + 0.05 * across**2)
            chest.density += lung * (level - chest.density)
            chest.hilum[side] = (cx + SIGN[side] * (med + 0.04), apex + (0.43 if side == "right" else 0.40) * height)
        lungs = chest.lung["right"] + chest.lung["left"]

        # Solid organs set a floor on the density (they look uniformly white, whatever lies behind them):
        # mediastinum, heart, and liver / spleen below the diaphragm.
        diaphragm = np.where(x < cx, chest.dome_y("right", x), chest.dome_y("left", x))
        abdomen = ramp(y - diaphragm, w) * body
        solid = 1.2 * habitus

        def floor(mask: np.ndarray, level: float | np.ndarray) -> None:
            chest.density += mask * np.maximum(level - chest.density, 0)

        floor(abdomen, 0.92 * solid * np.maximum(thick, 0.35))

        # Heart: a right-atrial arc and a tilted left-ventricular ellipse sitting on the diaphragm, joined to the
        # mediastinum by borders that widen from the aortic knob / superior vena cava down to the heart.
        total = 2 * thorax * ctr  # heart width: exactly ctr x the thoracic width at the bases
        tilt = float(rng.uniform(0.25, 0.45))
        aspect = float(rng.uniform(0.75, 0.9))
        a1 = 0.42 * total / np.sqrt(np.cos(tilt) ** 2 + (aspect * np.sin(tilt)) ** 2)
        b1 = aspect * a1
        # The widest point of the tilted ellipse lies below its centre: lift the centre so that point (which
        # defines the CTR) sits just above the diaphragm and stays visible.
        widest_dy = (a1**2 - b1**2) * np.sin(tilt) * np.cos(tilt) / (0.42 * total)
        x1, y1 = cx + 0.23 * total, dome["left"] - float(rng.uniform(0.02, 0.04)) - widest_dy
        a2, b2 = 0.2 * total, 0.36 * total + 0.03
        x2, y2 = cx - 0.35 * total + a2, dome["right"] - 0.05
        c, s = np.float32(np.cos(tilt)), np.float32(np.sin(tilt))
        px, py = x - x1, y - y1
        lv = 1 - np.sqrt(((px * c + py * s) / a1) ** 2 + ((-px * s + py * c) / b1) ** 2)
        ra = 1 - np.sqrt(((x - x2) / a2) ** 2 + ((y - y2) / b2) ** 2)
        kx, ky = cx + med * 1.05, chest.carina - float(rng.uniform(0.04, 0.06))
        yy = y[:, :1]
        left_border = cx + med + (0.5 * total - med) * np.clip((yy - ky) / (y1 - ky), 0, 1) ** 2.5
        right_border = cx - med - (0.25 * total - med) * np.clip((yy - chest.carina) / (y2 - chest.carina), 0, 1) ** 2
        mediastinum = ramp(left_border - x, w) * ramp(x - right_border, w) * top
        floor(mediastinum, solid * (0.94 + 0.08 * ramp(y - apex, 0.2)))
        heart = ramp(np.maximum(lv * a1, ra * a2), w)
        floor(heart, solid * 1.02)
        chest.heart = (x1, y1, 0.5 * total, float(a1), float(b1))
        floor(ramp(0.024 - np.sqrt((x - kx) ** 2 + (y - ky) ** 2), w), solid * 1.02)  # aortic knob

        # Gastric air bubble under the left dome.
        gx, gy = cx + thorax * float(rng.uniform(0.35, 0.6)), dome["left"] + float(rng.uniform(0.04, 0.07))
        bubble = ramp(1 - ((x - gx) / 0.05) ** 2 - ((y - gy) / 0.028) ** 2, 0.4) * ramp(y - diaphragm - 0.01, w)
        chest.density -= float(rng.uniform(0.15, 0.35)) * bubble

        # Spine: faint through the mediastinum, vertebral bodies with pedicles.
        period = float(rng.uniform(0.042, 0.05))
        phase = float(rng.uniform(0, period))
        spine = ramp(0.03 - ax, w) * top
        chest.density += 0.1 * spine * (0.7 + 0.3 * np.cos((y - phase) * np.float32(2 * np.pi / period)))
        bones = Strokes(size)
        for k in range(int(1.0 / period) + 1):
            yk = phase + k * period + period * 0.35
            for sg in (-1, 1):
                bones.ellipse((cx + sg * 0.021, yk), 0.007, 0.01, 0.0, outline=0.35)

        # Airway: trachea down to the carina, then the main bronchi.
        air = Strokes(size)
        tx = cx + float(rng.uniform(-0.008, 0.008))
        air.line([(tx, -0.02), (tx + 0.004, chest.carina)], 0.03, 1.0)
        air.line([(tx + 0.004, chest.carina), (tx - 0.06, chest.carina + 0.06)], 0.02, 0.8)
        air.line([(tx + 0.004, chest.carina), (tx + 0.065, chest.carina + 0.075)], 0.018, 0.8)
        chest.density -= 0.2 * air.array() * top

        # Ribs: posterior arcs from the spine, fainter anterior ribs running down and in; clavicles; shoulders.
        ribs_post, ribs_ant = Strokes(size), Strokes(size)
        height = costophrenic["right"] - apex
        y0 = apex - 0.025
        droop = float(rng.uniform(0.14, 0.19))
        for i in range(10):
            frac = i / 9
            lat = thorax * (0.85 + 0.2 * min(1.0, i / 3))
            us = np.linspace(0.05, 1.03, 16)
            for side in SIDES:
                sg = SIGN[side]
                pts = [(cx + sg * uu * lat, y0 - 0.06 * uu + droop * uu**3) for uu in us]
                ribs_post.bone(pts, 0.017 + 0.007 * frac, 1.0)
                if 1 <= i <= 7:
                    end = pts[-1]
                    ribs_ant.bone(
                        bezier([end, (cx + sg * lat * 1.0, end[1] + 0.06), (cx + sg * lat * 0.35, end[1] + 0.13)], 12),
                        0.022,
                        1.0,
                    )
            y0 += height * (0.07 + 0.035 * frac)
        for side in SIDES:
            sg = SIGN[side]
            clav = bezier(
                [
                    (cx + sg * 0.04, apex + 0.075),
                    (cx + sg * thorax * 0.45, apex + 0.045),
                    (cx + sg * thorax * 0.75, apex - 0.01),
                    (cx + sg * thorax * 1.15, apex - 0.02),
                ],
                18,
            )
            bones.bone(clav, 0.026, 1.0)
            head = (cx + sg * thorax * 1.22, apex + 0.01)
            bones.ellipse(head, 0.06, 0.065, 0.7)
            bones.bone([head, (cx + sg * thorax * 1.46, apex + 0.4)], 0.06, 0.7)
            # Medial border of the scapula, seen through the lateral upper lung.
            bones.line(
                bezier(
                    [
                        (cx + sg * thorax * 1.1, apex - 0.01),
                        (cx + sg * thorax * 0.82, apex + 0.12),
                        (cx + sg * thorax * 0.98, apex + 0.3),
                    ],
                    12,
                ),
                0.01,
                0.3,
            )
        rib_mask = ramp(thorax * 1.1 - ax, 0.02) * ramp(diaphragm + 0.08 - y, 0.05) * (0.35 + 0.65 * lungs)
        chest.density += (0.15 * ribs_post.array() + 0.07 * ribs_ant.array()) * rib_mask
        chest.density += 0.3 * bones.array() * body

        # Lung markings: vessels radiating from the hila, plus fine parenchymal texture.
        reach = [float(rng.uniform(0.14, 0.2)) for _ in SIDES]
        chest.markings = lung_markings(rng, size, [(chest.hilum[side], r) for side, r in zip(SIDES, reach)])
        for side in SIDES:
            hxl, hyl = chest.hilum[side]
            chest.density += 0.16 * np.exp(-((x - hxl) ** 2 + (y - hyl) ** 2) / np.float32(2 * 0.03**2)) * lungs
        chest.extras = {"habitus": habitus, "ctr": ctr}
        return chest


# -------------------------------------------------------------------------------------------------------- lateral
@dataclass
class Lateral:
    """A normal lateral chest (anterior = image left): density map plus geometry."""

    size: int
    x: np.ndarray
    y: np.ndarray
    front: float
    """x of the anterior chest wall."""
    spine: float
    """x of the front of the vertebral bodies."""
    apex: float
    dome_front: float
    dome_back: float
    lung: np.ndarray
    heart: tuple[float, float, float, float]
    hilum: Point
    carina: Point
    density: np.ndarray
    markings: np.ndarray
    marking_gain: np.ndarray
    mm: float

    def diaphragm(self, x: np.ndarray) -> np.ndarray:
        p = np.clip((x - self.front) / (self.spine - self.front), 0, 1.1)
        dome = 0.05 * np.sin(np.pi * np.clip(p, 0, 1))
        return (self.dome_front + (self.dome_back - self.dome_front) * p**1.6 - dome).astype(np.float32)

    def point(self, depth: float, v: float) -> Point:
        """Image point at depth (anterior wall 0 -> spine 1) and height v (apex 0 -> posterior sulcus 1)."""
        return self.front + depth * (self.spine - self.front), self.apex + v * (self.dome_back - self.apex)

    def add(self, layer: np.ndarray, amount: float) -> None:
        self.density += np.float32(amount) * layer

    def final_density(self, marking_amount: float = 0.18) -> np.ndarray:
        return self.density + np.float32(marking_amount) * self.markings * self.marking_gain * self.lung

    @classmethod
    def build(cls, rng: np.random.Generator, size: int, ctr: float, mm: float) -> Lateral:
        """Draw a normal lateral chest; `ctr` scales the heart like on the frontal view, `mm` is one millimetre."""
        x, y = grid(size)
        w = max(1.2 / size, 0.006)
        front = float(rng.uniform(0.06, 0.12))
        back = float(rng.uniform(0.9, 0.98))
        spine = float(rng.uniform(0.68, 0.73))
        apex = float(rng.uniform(0.08, 0.13))
        dome_front = float(rng.uniform(0.58, 0.65))
        dome_back = dome_front + float(rng.uniform(0.12, 0.17))
        habitus = float(rng.uniform(0.9, 1.2))
        chest = cls(
            size=size,
            x=x,
            y=y,
            front=front,
            spine=spine,
            apex=apex,
            dome_front=dome_front,
            dome_back=dome_back,
            lung=np.zeros_like(x),
            heart=(0, 0, 0, 0),
            hilum=(0, 0),
            carina=(0, 0),
            density=np.zeros_like(x),
            markings=np.zeros_like(x),
            marking_gain=np.ones_like(x),
            mm=mm,
        )

        # Body with a neck on top; shoulders and raised arms thicken the upper chest.
        neckness = np.clip((0.14 - y) / 0.14, 0, 1) ** 1.5
        wall = front + 0.24 * neckness
        rear = back - 0.08 * neckness
        body = ramp(x - wall, 2 * w) * ramp(rear - x, 2 * w)
        depth = np.clip((x - wall) / np.maximum(rear - wall, 1e-3), 0, 1)
        thick = np.sqrt(np.clip(1 - (2 * depth - 1) ** 2 * 0.8, 0, 1))
        shoulders = ramp(0.27 - y, 0.14)
        chest.density = habitus * body * (0.8 * thick + 0.35 * shoulders)

        # Lungs (both superimposed): rounded apex, retrosternal and retrocardiac spaces, diaphragm.
        mid, half = (front + spine) / 2, (spine - front) / 2
        top = apex + 0.2 * ((x - mid) / half) ** 2
        diaphragm = chest.diaphragm(x)
        lung = ramp(x - front - 0.03, w) * ramp(spine - 0.01 - x, w) * ramp(y - top, w) * ramp(diaphragm - y, w)
        chest.lung = lung
        level = habitus * (0.3 + 0.3 * shoulders)
        chest.density += lung * (level - chest.density)
        chest.density += 0.12 * lung * ramp(y - diaphragm + 0.03, w)  # the other hemidiaphragm, a little lower
        solid = 1.15 * habitus

        def floor(mask: np.ndarray, level: float | np.ndarray) -> None:
            chest.density += mask * np.maximum(level - chest.density, 0)

        below = ramp(y - diaphragm, w) * body
        floor(below, solid * 0.92 * thick)
        gx, gy = front + float(rng.uniform(0.12, 0.2)), dome_front + float(rng.uniform(0.03, 0.06))
        chest.density -= 0.2 * below * ramp(1 - ((x - gx) / 0.05) ** 2 - ((y - gy) / 0.028) ** 2, 0.4)

        # Heart: anterior, resting on the diaphragm; bigger with a bigger CTR. Great vessels above it.
        scale = ctr / 0.43
        a, b = 0.15 * scale, 0.13 * (0.6 + 0.4 * scale)
        hx, hy = front + 0.02 + a * 0.9, dome_front - b * 0.45
        tilt = float(rng.uniform(-0.6, -0.35))
        c, s = np.float32(np.cos(tilt)), np.float32(np.sin(tilt))
        px, py = x - hx, y - hy
        heart = ramp(1 - np.sqrt(((px * c + py * s) / a) ** 2 + ((-px * s + py * c) / b) ** 2), 0.15)
        floor(heart, solid * 0.55)
        chest.heart = (hx, hy, a, b)

        # Airway, aorta, sternum, spine, posterior ribs.
        strokes, air, bones = Strokes(size), Strokes(size), Strokes(size)
        carina = (spine - 0.2, apex + 0.25)
        air.line([(spine - 0.25, -0.02), carina], 0.04, 1.0)
        chest.carina = carina
        chest.hilum = (carina[0] + 0.01, carina[1] + 0.06)
        strokes.line(
            bezier(
                [
                    (hx - 0.02, hy - b),
                    (front + 0.2, apex + 0.04),
                    (spine - 0.02, apex + 0.1),
                    (spine - 0.015, dome_back),
                ],
                30,
            ),
            0.045,
            1.0,
        )
        bones.bone([(front + 0.015, apex + 0.08), (front + 0.02, dome_front - 0.05)], 0.022, 0.6)
        vh = float(rng.uniform(0.048, 0.056))
        yk = float(rng.uniform(-vh, 0))
        while yk < 1.0:
            xk = spine + 0.02 * np.sin(np.pi * yk)
            bones.draw.rectangle([xk * size, yk * size, (xk + 0.095) * size, (yk + vh - 0.012) * size], fill=0.5)
            bones.line([(xk + 0.095, yk + vh * 0.4), (xk + 0.17, yk + vh * 0.8)], 0.025, 0.15)
            yk += vh
        for i in range(9):
            y0 = apex + 0.02 + i * 0.07
            bones.line(
                bezier([(spine + 0.08, y0), (spine - 0.1, y0 + 0.08), (front + 0.1, y0 + 0.22)], 14), 0.016, 0.15
            )
        chest.density += (0.08 * strokes.array() - 0.1 * air.array() + 0.4 * bones.array()) * body

        # Lung markings from the hilum.
        chest.density += (
            0.15 * np.exp(-((x - chest.hilum[0]) ** 2 + (y - chest.hilum[1]) ** 2) / np.float32(2 * 0.035**2)) * lung
        )
        chest.markings = lung_markings(rng, size, [(chest.hilum, 0.18)])
        return chest


# -------------------------------------------------------------------------------------------------------- exposure
def expose(density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uint8 radiograph of a density map: random pose, exposure, window, gamma, detector blur and noise."""
    size = density.shape[0]
    angle = float(np.clip(rng.normal(0, 1.5), -4, 4)) * np.pi / 180
    scale = float(rng.uniform(0.95, 1.05))
    shift = np.clip(rng.normal(0, 0.015, 2), -0.04, 0.04) * size
    # Output pixel p samples input at c + R(angle) (p - c) / scale + shift.
    c0 = size / 2
    ca, sa = np.cos(angle) / scale, np.sin(angle) / scale
    coeffs = (ca, -sa, c0 - ca * c0 + sa * c0 + shift[0], sa, ca, c0 - sa * c0 - ca * c0 + shift[1])
    moved = Image.fromarray(density.astype(np.float32), "F").transform(
        (size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0.0
    )
    d = np.asarray(moved, dtype=np.float32)
    d = blur(d, float(rng.uniform(0.4, 0.9)) * size / 256)
    k = np.float32(rng.uniform(1.0, 1.4))
    img = 1 - np.exp(-k * np.maximum(d, 0))
    lo, hi = np.float32(rng.uniform(0.06, 0.13)), np.float32(rng.uniform(0.78, 0.9))
    img = np.clip((img - lo) / (hi - lo), 0, 1) ** np.float32(rng.uniform(0.8, 1.25))
    img += smooth_noise(rng, size, 4) * np.float32(rng.uniform(0.0, 0.03))  # uneven exposure
    img += rng.standard_normal((size, size), dtype=np.float32) * np.float32(rng.uniform(0.006, 0.02))
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
