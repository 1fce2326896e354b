"""Drawing the findings of a study onto the normal anatomy of both views.

Contract: `plan_lesions(spec, rng)` turns the sampled attributes (`sampling.StudySpec`) into concrete geometry
(positions, sizes, densities) once, so the frontal and the lateral view show the same lesion;
`draw_frontal(chest, spec, plan, rng)` and `draw_lateral(chest, spec, plan, rng)` add each positive finding's
image evidence to the density map and marking gain (rng: the lesion stream, for texture only). Cardiomegaly
(cardiothoracic ratio) and atelectatic volume loss (raised hemidiaphragm) act through `anatomy.Frontal.build`'s
arguments instead (see `anatomy_overrides`).
Evidence per finding: effusion = dense basal fluid with a meniscus (small: only the costophrenic angle blunts);
pneumothorax = lucent rim without markings and a thin pleural line; consolidation = patchy lobar opacity;
nodule/mass = round (masses lobulated) opacity, faint when small; atelectasis = linear / plate-like bands;
edema = perihilar haze, prominent vessels, Kerley lines; devices = bright lines, tubes and a pacemaker box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medvl.data.synth.anatomy import SIDES, SIGN, Frontal, Lateral, Strokes, bezier, ramp, smooth_noise
from medvl.data.synth.sampling import LOBE_ZONES, StudySpec

# Depth on the lateral view (anterior wall 0 -> spine 1) of each lobe.
_LOBE_DEPTH = {
    "right upper lobe": (0.45, 0.8),
    "left upper lobe": (0.45, 0.8),
    "right middle lobe": (0.15, 0.4),
    "lingula": (0.15, 0.4),
    "right lower lobe": (0.55, 0.9),
    "left lower lobe": (0.55, 0.9),
}


@dataclass
class Spot:
    """A lesion location and shape shared by both views."""

    side: str
    u: float
    v: float
    depth: float
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class LesionPlan:
    """Concrete geometry of every positive finding of one study, shared by both views."""

    effusion: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """side -> (fluid height at the lateral wall, at the mediastinum, as fractions of the hemithorax height;
    fluid density)."""
    pneumothorax: Spot | None = None
    consolidation: Spot | None = None
    nodule: Spot | None = None
    atelectasis: list[Spot] = field(default_factory=list)
    edema: dict[str, float] = field(default_factory=dict)
    devices: dict[str, float] = field(default_factory=dict)


def _spot(rng: np.random.Generator, lobe: str) -> Spot:
    (u0, u1), (v0, v1) = LOBE_ZONES[lobe]
    d0, d1 = _LOBE_DEPTH[lobe]
    side = "right" if lobe.startswith("right") else "left"
    return Spot(side, float(rng.uniform(u0, u1)), float(rng.uniform(v0, v1)), float(rng.uniform(d0, d1)))


def anatomy_overrides(spec: StudySpec) -> dict[str, Any]:
    """Keyword arguments for `Frontal.build`: the CTR of cardiomegaly and the raised dome of volume loss."""
    out: dict[str, Any] = {}
    if spec.labels["cardiomegaly"]:
        out["ctr"] = spec.details["cardiomegaly"]["cardiothoracic_ratio"]
    atel = spec.details.get("atelectasis")
    if atel and atel["volume_loss"]:
        sides = SIDES if atel["side"] == "bilateral" else (atel["side"],)
        out["dome_lift"] = {s: 0.045 for s in sides}
    return out


def plan_lesions(spec: StudySpec, rng: np.random.Generator) -> LesionPlan:
    """Concrete geometry of every positive finding (a fixed sequence of draws per finding)."""
    plan = LesionPlan()
    d = spec.details
    if "pleural_effusion" in d:
        size = d["pleural_effusion"]["size"]
        sides = SIDES if d["pleural_effusion"]["side"] == "bilateral" else (d["pleural_effusion"]["side"],)
        for side in sides:
            if size == "small":  # only blunts the costophrenic angle, a little: meant to be hard
                h_lat, h_med = float(rng.uniform(0.035, 0.075)), -0.08
            elif size == "moderate":
                h_lat = float(rng.uniform(0.28, 0.38))
                h_med = h_lat - float(rng.uniform(0.1, 0.15))
            else:
                h_lat = float(rng.uniform(0.55, 0.72))
                h_med = h_lat - float(rng.uniform(0.12, 0.18))
            density = float(rng.uniform(0.3, 0.45)) if size == "small" else 0.62
            plan.effusion[side] = (h_lat, h_med, density)
    if "pneumothorax" in d:
        large = d["pneumothorax"]["size"] == "large"
        gap = float(rng.uniform(0.07, 0.11)) if large else float(rng.uniform(0.025, 0.045))
        plan.pneumothorax = Spot(d["pneumothorax"]["side"], 0.0, 0.0, 0.0, {"gap": gap, "large": float(large)})
    if "consolidation" in d:
        spot = _spot(rng, d["consolidation"]["lobe"])
        spot.params = {
            "rx": float(rng.uniform(0.06, 0.1)),
            "ry": float(rng.uniform(0.05, 0.085)),
            "density": float(rng.uniform(0.38, 0.5)),
            "threshold": 0.45 if d["consolidation"]["pattern"] == "patchy" else 0.3,
        }
        plan.consolidation = spot
    if "nodule_mass" in d:
        spot = _spot(rng, d["nodule_mass"]["lobe"])
        mm = d["nodule_mass"]["size_mm"]
        spot.params = {
            "radius_mm": mm / 2,
            "density": 0.18 + 0.47 * min(1.0, (mm - 5) / 30),
            "lobulated": float(d["nodule_mass"]["kind"] == "mass"),
            "phase1": float(rng.uniform(0, 2 * np.pi)),
            "phase2": float(rng.uniform(0, 2 * np.pi)),
        }
        plan.nodule = spot
    if "atelectasis" in d:
        loc, pattern = d["atelectasis"]["location"], d["atelectasis"]["pattern"]
        lobes = ("right lower lobe", "left lower lobe") if loc == "bibasilar" else (loc,)
        for lobe in lobes:
            count = 2 if pattern == "subsegmental" else 1
            for _ in range(count):
                spot = _spot(rng, lobe)
                thick = {"linear": (0.006, 0.009), "plate-like": (0.011, 0.016), "subsegmental": (0.007, 0.011)}
                spot.params = {
                    "angle": float(rng.uniform(-0.35, 0.25)),
                    "half_len": float(rng.uniform(0.06, 0.1)),
                    "half_thick": float(rng.uniform(*thick[pattern])),
                    "density": float(rng.uniform(0.4, 0.5)),
                }
                plan.atelectasis.append(spot)
    if "edema" in d:
        level = {"mild": 0, "moderate": 1, "severe": 2}[d["edema"]["severity"]]
        plan.edema = {
            "amount": (0.12, 0.24, 0.38)[level],
            "sx": (0.08, 0.11, 0.14)[level],
            "sy": (0.1, 0.13, 0.17)[level],
            "gain": (1.5, 1.9, 2.3)[level],
            "kerley": (0, 4, 7)[level],
            "level": level,
        }
    if "support_devices" in d:
        plan.devices = {
            "ett_tip": float(rng.uniform(0.03, 0.07)),
            "cvc_tip": float(rng.uniform(0.0, 0.05)),
            "ng_x": float(rng.uniform(0.3, 0.55)),
            "pacer_y": float(rng.uniform(0.06, 0.11)),
        }
    return plan


# ------------------------------------------------------------------------------------------------------- frontal
def draw_frontal(chest: Frontal, spec: StudySpec, plan: LesionPlan, rng: np.random.Generator) -> None:
    """Add every positive finding's evidence to a frontal chest (in place)."""
    x, y, size = chest.x, chest.y, chest.size
    habitus = chest.extras["habitus"]

    for side, (h_lat, h_med, density) in plan.effusion.items():
        dx = (x - chest.cx) * SIGN[side]
        u = np.clip((dx - chest.med) / (chest.lateral_wall(side, y) - chest.med), 0, 1)
        level = chest.costophrenic[side] - chest.height(side) * (h_med + (h_lat - h_med) * u**2.5)
        fluid = ramp(y - level, 0.03) * chest.lung[side]
        chest.add(fluid, density * habitus)
        chest.marking_gain *= 1 - fluid

    if plan.pneumothorax is not None:
        side, gap, large = plan.pneumothorax.side, plan.pneumothorax.params["gap"], plan.pneumothorax.params["large"]
        v = np.clip((y - chest.apex) / chest.height(side), 0, 1)
        rim = gap * (1 - 0.45 * v) if large else gap * np.clip(1 - v / 0.4, 0, 1) ** 0.7
        e, lung = chest.edge_dist[side], chest.lung[side]
        region = ramp(rim - e, 0.006) * lung
        line = np.clip(1 - np.abs(e - rim) / max(0.8 / size, 0.003), 0, 1) * lung * (rim > 0.004)
        chest.add(region, -0.14 * habitus)
        chest.add(line, 0.25)
        if large:
            chest.add(lung * (1 - region), 0.08)  # the partly deflated lung is denser
        chest.marking_gain *= 1 - region

    if plan.consolidation is not None:
        s = plan.consolidation
        xc, yc = chest.point(s.side, s.u, s.v)
        env = np.exp(
            -((x - xc) ** 2) / np.float32(2 * s.params["rx"] ** 2)
            - ((y - yc) ** 2) / np.float32(2 * s.params["ry"] ** 2)
        )
        patch = np.clip((env * 1.4 + 0.4 * smooth_noise(rng, size, 16) - s.params["threshold"] - 0.1) / 0.5, 0, 1)
        chest.add(patch * chest.lung[s.side], s.params["density"] * habitus)

    if plan.nodule is not None:
        s = plan.nodule
        xc, yc = chest.point(s.side, s.u, s.v)
        chest.add(_ball(x, y, xc, yc, s.params["radius_mm"] * chest.mm, s.params), s.params["density"])

    for s in plan.atelectasis:
        xc, yc = chest.point(s.side, s.u, s.v)
        chest.add(_band(x, y, xc, yc, s.params) * chest.lung[s.side], s.params["density"] * habitus)

    if plan.edema:
        p = plan.edema
        haze = np.zeros_like(x)
        for side in SIDES:
            hx, hy = chest.hilum[side]
            g = np.exp(-((x - hx) ** 2) / np.float32(2 * p["sx"] ** 2) - ((y - hy) ** 2) / np.float32(2 * p["sy"] ** 2))
            haze += g * chest.lung[side]
        if p["level"] >= 1:
            haze *= 0.8 + 0.35 * smooth_noise(rng, size, 12)
        chest.add(haze, p["amount"] * habitus)
        upper = ramp(chest.hilum["right"][1] - y, 0.2)  # cephalization: upper-zone vessels dilate most
        chest.marking_gain *= np.float32(p["gain"]) * (0.8 + 0.4 * upper)
        lines = Strokes(size)
        for k in range(int(p["kerley"])):
            side = SIDES[k % 2]
            xk, yk = chest.point(side, float(rng.uniform(0.86, 0.97)), float(rng.uniform(0.62, 0.9)))
            lines.line([(xk, yk), (xk - SIGN[side] * 0.03, yk)], 0.004, 1.0)
        if p["kerley"]:
            chest.add(lines.array() * (chest.lung["right"] + chest.lung["left"]), 0.2)

    if spec.labels["support_devices"]:
        _devices_frontal(chest, spec.details["support_devices"], plan.devices)


def _ball(x: np.ndarray, y: np.ndarray, xc: float, yc: float, radius: float, params: dict[str, float]) -> np.ndarray:
    """A sphere's projected thickness; masses get a lobulated outline."""
    dx, dy = x - xc, y - yc
    r2 = dx * dx + dy * dy
    if params["lobulated"]:
        theta = np.arctan2(dy, dx)
        radius = radius * (1 + 0.1 * np.sin(3 * theta + params["phase1"]) + 0.06 * np.sin(5 * theta + params["phase2"]))
    return np.sqrt(np.clip(1 - r2 / radius**2, 0, 1)).astype(np.float32) ** 0.7


def _band(x: np.ndarray, y: np.ndarray, xc: float, yc: float, params: dict[str, float]) -> np.ndarray:
    """A thin, nearly horizontal band (linear / plate-like atelectasis)."""
    c, s = np.float32(np.cos(params["angle"])), np.float32(np.sin(params["angle"]))
    along = (x - xc) * c + (y - yc) * s
    across = -(x - xc) * s + (y - yc) * c
    taper = 1 - (along / params["half_len"]) ** 2  # thicker in the middle
    return ramp(params["half_thick"] * np.clip(taper, 0, 1) - np.abs(across), 0.006) * ramp(
        params["half_len"] - np.abs(along), 0.02
    )


def _devices_frontal(chest: Frontal, info: dict[str, Any], geo: dict[str, float]) -> None:
    cx, apex, carina, thorax = chest.cx, chest.apex, chest.carina, chest.thorax
    tubes, metal = Strokes(chest.size), Strokes(chest.size)
    devices = info["devices"]
    svc = (cx - chest.med * 0.7, carina + geo["cvc_tip"])  # tip of central lines: the superior vena cava
    if "endotracheal tube" in devices:
        tip = carina - geo["ett_tip"]
        tubes.line([(cx + 0.002, -0.02), (cx + 0.004, tip)], 0.022, 0.25)
        metal.line([(cx - 0.004, -0.02), (cx - 0.002, tip)], 0.005, 0.8)
    if "central venous catheter" in devices:
        site = info["cvc_site"]
        sg = SIGN["right" if site.startswith("right") else "left"]
        if "jugular" in site:
            ctrl = [(cx + sg * 0.085, -0.02), (cx + sg * 0.07, apex + 0.06), (cx + sg * 0.03, apex + 0.14), svc]
        else:
            ctrl = [
                (cx + sg * thorax * 0.95, apex + 0.02),
                (cx + sg * thorax * 0.4, apex + 0.1),
                (cx + sg * 0.02, apex + 0.12),
                svc,
            ]
        metal.line(bezier(ctrl, 30), 0.006, 0.75)
    if "nasogastric tube" in devices:
        stomach_y = chest.dome["left"] + 0.09
        ctrl = [
            (cx + 0.012, -0.02),
            (cx + 0.015, carina),
            (cx + 0.03, chest.dome["left"]),
            (cx + thorax * geo["ng_x"], stomach_y),
            (cx + thorax * geo["ng_x"] * 0.6, stomach_y + 0.03),
        ]
        metal.line(bezier(ctrl, 36), 0.008, 0.6)
    if "pacemaker" in devices:
        sg = SIGN[info["pacemaker_side"]]
        box = (cx + sg * thorax * 0.62, apex + geo["pacer_y"])
        metal.box(box, 0.045, 0.032, 1.6, radius=0.012)
        hx, hy, half, _, _ = chest.heart
        for tip in ((cx - chest.med * 0.8, hy - 0.04), (hx + 0.5 * half, hy + 0.04)):
            ctrl = [box, (cx + sg * 0.1, apex + 0.02), (cx - 0.03, apex + 0.12), (cx - chest.med, carina + 0.05), tip]
            metal.line(bezier(ctrl, 36), 0.005, 0.9)
    if "picc line" in devices:
        sg = SIGN[info["picc_side"]]
        ctrl = [
            (cx + sg * 0.52, apex + 0.14),
            (cx + sg * thorax * 1.05, apex + 0.03),
            (cx + sg * 0.06, apex + 0.08),
            svc,
        ]
        metal.line(bezier(ctrl, 30), 0.005, 0.65)
    chest.density += tubes.array() + metal.array()


# ------------------------------------------------------------------------------------------------------- lateral
def draw_lateral(chest: Lateral, spec: StudySpec, plan: LesionPlan, rng: np.random.Generator) -> None:
    """Add the findings visible on a lateral view (all but pneumothorax, which a lateral rarely shows)."""
    x, y, size = chest.x, chest.y, chest.size
    height = chest.dome_back - chest.apex
    if plan.effusion:
        p = np.clip((x - chest.front) / (chest.spine - chest.front), 0, 1)
        amount = 0.0
        fluid = np.zeros_like(x)
        for h_lat, h_med, density in plan.effusion.values():
            level = chest.dome_back - height * ((h_med - 0.1) + (h_lat - h_med + 0.1) * p**2)
            fluid = np.maximum(fluid, ramp(y - level, 0.03) * chest.lung)
            amount += 0.65 * density
        chest.add(fluid, amount)
        chest.marking_gain *= 1 - 0.7 * fluid

    if plan.consolidation is not None:
        s = plan.consolidation
        xc, yc = chest.point(s.depth, s.v)
        env = np.exp(
            -((x - xc) ** 2) / np.float32(2 * (s.params["rx"] * 0.9) ** 2)
            - ((y - yc) ** 2) / np.float32(2 * s.params["ry"] ** 2)
        )
        patch = np.clip((env * 1.4 + 0.4 * smooth_noise(rng, size, 16) - s.params["threshold"] - 0.1) / 0.5, 0, 1)
        chest.add(patch * chest.lung, 0.75 * s.params["density"])

    if plan.nodule is not None:
        s = plan.nodule
        xc, yc = chest.point(s.depth, s.v)
        chest.add(_ball(x, y, xc, yc, s.params["radius_mm"] * chest.mm, s.params), 0.8 * s.params["density"])

    for s in plan.atelectasis:
        xc, yc = chest.point(s.depth, s.v)
        chest.add(_band(x, y, xc, yc, s.params) * chest.lung, 0.7 * s.params["density"])

    if plan.edema:
        p_ = plan.edema
        hx, hy = chest.hilum
        haze = (
            np.exp(
                -((x - hx) ** 2) / np.float32(2 * (p_["sx"] * 1.3) ** 2)
                - ((y - hy) ** 2) / np.float32(2 * p_["sy"] ** 2)
            )
            * chest.lung
        )
        chest.add(haze, 1.2 * p_["amount"])
        chest.marking_gain *= np.float32(p_["gain"])

    if spec.labels["support_devices"]:
        _devices_lateral(chest, spec.details["support_devices"], plan.devices)


def _devices_lateral(chest: Lateral, info: dict[str, Any], geo: dict[str, float]) -> None:
    devices = info["devices"]
    metal, tubes = Strokes(chest.size), Strokes(chest.size)
    (cxr, cyr), spine, front = chest.carina, chest.spine, chest.front
    top = (spine - 0.25, -0.02)
    svc = (cxr - 0.09, cyr + 0.03 + geo["cvc_tip"])
    if "endotracheal tube" in devices:
        t = 1 - geo["ett_tip"] / 0.3
        tip = (top[0] + t * (cxr - top[0]), top[1] + t * (cyr - top[1]))
        tubes.line([top, tip], 0.022, 0.22)
        metal.line([(top[0] + 0.006, top[1]), (tip[0] + 0.006, tip[1])], 0.005, 0.7)
    if "nasogastric tube" in devices:
        ctrl = [
            (spine - 0.14, -0.02),
            (spine - 0.07, chest.dome_back - 0.15),
            (spine - 0.12, chest.dome_front + 0.1),
            (front + 0.2, chest.dome_front + 0.08),
        ]
        metal.line(bezier(ctrl, 30), 0.008, 0.55)
    if "central venous catheter" in devices or "picc line" in devices:
        ctrl = [(spine - 0.3, -0.02), (spine - 0.3, chest.apex + 0.08), svc]
        metal.line(bezier(ctrl, 20), 0.006, 0.7)
    if "pacemaker" in devices:
        box = (front + 0.04, chest.apex + geo["pacer_y"])
        metal.box(box, 0.02, 0.035, 1.6, radius=0.008)
        hx, hy, a, _ = chest.heart
        metal.line(bezier([box, (front + 0.15, chest.apex + 0.02), svc, (hx - 0.3 * a, hy + 0.05)], 30), 0.005, 0.9)
    chest.density += tubes.array() + metal.array()
