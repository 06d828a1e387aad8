"""Synthetic motion set for judging interpolators: every frame is RENDERED at its pose.

A case is a textured background seen by a camera that may pan, plus textured sprites (ellipses,
rounded rectangles, polygons) that translate and rotate on screen. `render(case, t, size)` draws the
scene at time t in [0, 1] from the source textures, so the true in-between frame is exact - not a
warp of the end frames. Rendering is 2x supersampled and area-downsampled (soft, camera-like edges).

Textures are non-repeating (scikit-image's sample photographs and smooth random noise) except in the
one `periodic` case: stripes and checkerboards defeat every matcher, so that case is reported but
kept out of quality assertions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

from engine.image import cover_resize

Shape = Literal["ellipse", "rect", "polygon"]
SS = 2  # supersampling factor


@dataclass(frozen=True)
class Sprite:
    texture: str
    shape: Shape
    size: tuple[float, float]  # (w, h) as fractions of the frame width/height
    start: tuple[float, float]  # centre at t=0, fractions of the frame
    move: tuple[float, float]  # on-screen displacement from t=0 to t=1, pixels
    rotate_deg: float = 0.0  # rotation from t=0 to t=1
    angle_deg: float = 0.0  # orientation at t=0


@dataclass(frozen=True)
class MotionCase:
    name: str
    background: str
    pan: tuple[float, float] = (0.0, 0.0)  # camera displacement t=0 -> t=1, pixels (scene moves by -pan)
    sprites: tuple[Sprite, ...] = field(default_factory=tuple)
    periodic: bool = False  # reported, never asserted

    @property
    def max_motion_px(self) -> float:
        moves = [np.hypot(*s.move) for s in self.sprites] + [np.hypot(*self.pan)]
        return float(max(moves))


CASES: tuple[MotionCase, ...] = (
    MotionCase("static-translate-8", "astronaut",
               sprites=(Sprite("coffee", "ellipse", (0.40, 0.32), (0.45, 0.55), (8, 0)),)),
    MotionCase("static-translate-rotate", "chelsea",
               sprites=(Sprite("rocket", "rect", (0.34, 0.42), (0.50, 0.45), (16, 10), 3.0, 10.0),)),
    MotionCase("static-large-32", "noise-warm",
               sprites=(Sprite("astronaut", "ellipse", (0.42, 0.42), (0.58, 0.50), (-30, 10)),)),
    MotionCase("pan-6-object-12", "coffee", pan=(6, 2),
               sprites=(Sprite("chelsea", "ellipse", (0.36, 0.30), (0.40, 0.40), (-12, 4), -2.0),)),
    MotionCase("pan-20", "rocket", pan=(20, -6)),
    MotionCase("two-objects", "astronaut",
               sprites=(Sprite("coffee", "ellipse", (0.30, 0.26), (0.30, 0.32), (4, 4), -2.0),
                        Sprite("noise-cool", "rect", (0.28, 0.22), (0.66, 0.66), (-24, 12), 4.0, -8.0))),
    MotionCase("rotate-5", "noise-cool",
               sprites=(Sprite("coffee", "rect", (0.44, 0.36), (0.50, 0.50), (4, -4), 5.0),)),
    MotionCase("pan-12-object-rotate", "chelsea", pan=(-12, 0),
               sprites=(Sprite("astronaut", "polygon", (0.38, 0.38), (0.45, 0.52), (20, -16), -3.0),)),
    MotionCase("periodic-stripes", "stripes", pan=(10, 0),
               sprites=(Sprite("checker", "rect", (0.36, 0.36), (0.50, 0.50), (24, 0)),), periodic=True),
)


def asserted_cases() -> tuple[MotionCase, ...]:
    return tuple(c for c in CASES if not c.periodic)


# ---- textures -------------------------------------------------------------------------------------
def _smooth_noise(seed: int, side: int, tint: tuple[float, float, float]) -> np.ndarray:
    """Non-repeating colour texture: sum of blurred white noise at several scales."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((side, side, 3), np.float32)
    for sigma, amp in ((32, 1.0), (12, 0.6), (5, 0.35)):
        n = rng.standard_normal((side, side, 3)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigma)
        acc += amp * n / (n.std() + 1e-6)
    acc = (acc - acc.mean()) / (acc.std() + 1e-6)
    img = 128 + 45 * acc + 30 * (np.asarray(tint, np.float32) - 0.5)
    return np.clip(img, 0, 255).astype(np.uint8)


def _periodic(kind: str, side: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    if kind == "stripes":  # vertical stripes, 12 px period at 512
        v = (np.sin(2 * np.pi * x / 12.0) > 0).astype(np.float32)
        return np.stack([60 + 150 * v, 80 + 120 * v, 200 - 120 * v], -1).astype(np.uint8)
    v = (((x // 16) + (y // 16)) % 2).astype(np.float32)  # checker, 16 px squares
    return np.stack([230 * v + 20, 40 + 150 * v, 200 - 150 * v], -1).astype(np.uint8)


@lru_cache(maxsize=16)
def texture(name: str) -> np.ndarray:
    """RGB uint8 texture by name (cached: textures are immutable inputs; callers must not write)."""
    if name.startswith("noise-"):
        seed, tint = {"noise-warm": (11, (0.9, 0.5, 0.2)), "noise-cool": (23, (0.2, 0.5, 0.9))}[name]
        img = _smooth_noise(seed, 512, tint)
    elif name in ("stripes", "checker"):
        img = _periodic(name, 1024)
    else:
        import skimage.data

        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        img = img[..., :3]
    img.setflags(write=False)
    return img


# ---- rendering ------------------------------------------------------------------------------------
def _background(case: MotionCase, t: float, W: int, H: int) -> np.ndarray:
    """Camera window at offset (margin + t*pan) into the background texture scaled to cover frame+margins."""
    tex = texture(case.background)
    margin = 40.0
    need_w, need_h = (W + 2 * margin) * SS, (H + 2 * margin) * SS
    s = max(need_w / tex.shape[1], need_h / tex.shape[0])
    ox, oy = (margin + t * case.pan[0]) * SS, (margin + t * case.pan[1]) * SS
    # screen(ss) = tex * s - offset
    M = np.array([[s, 0, -ox], [0, s, -oy]], np.float64)
    return cv2.warpAffine(tex, M, (W * SS, H * SS), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _shape_mask(shape: Shape, w: int, h: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    if shape == "ellipse":
        cv2.ellipse(m, (w // 2, h // 2), (w // 2 - 2, h // 2 - 2), 0, 0, 360, 255, -1, cv2.LINE_AA)
    elif shape == "rect":
        r = min(w, h) // 6
        cv2.rectangle(m, (r, 2), (w - r - 1, h - 3), 255, -1)
        cv2.rectangle(m, (2, r), (w - 3, h - r - 1), 255, -1)
        for cx, cy in ((r, r), (w - r - 1, r), (r, h - r - 1), (w - r - 1, h - r - 1)):
            cv2.circle(m, (cx, cy), r - 2, 255, -1, cv2.LINE_AA)
    else:  # an irregular star-ish polygon
        ang = np.linspace(0, 2 * np.pi, 11, endpoint=False)
        rad = np.array([1.0, 0.62, 0.95, 0.7, 0.88, 0.55, 1.0, 0.75, 0.9, 0.6, 0.97])
        pts = np.stack([w / 2 + (w / 2 - 3) * rad * np.cos(ang), h / 2 + (h / 2 - 3) * rad * np.sin(ang)], -1)
        cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return m


def _sprite(img: np.ndarray, sp: Sprite, t: float, W: int, H: int) -> None:
    """Composite the sprite at its pose at time t onto img (SS resolution, float32, in place)."""
    tex = texture(sp.texture)
    w, h = max(8, int(round(sp.size[0] * W * SS))), max(8, int(round(sp.size[1] * H * SS)))
    patch = cover_resize(tex, w, h)  # sprite content: the central crop of the texture scaled to cover (w, h)
    mask = _shape_mask(sp.shape, w, h)
    cx = (sp.start[0] * W + t * sp.move[0]) * SS
    cy = (sp.start[1] * H + t * sp.move[1]) * SS
    ang = sp.angle_deg + t * sp.rotate_deg
    M = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)  # about the sprite's own centre
    M[:, 2] += (cx - w / 2, cy - h / 2)
    obj = cv2.warpAffine(patch, M, (W * SS, H * SS), flags=cv2.INTER_LINEAR).astype(np.float32)
    alpha = cv2.warpAffine(mask, M, (W * SS, H * SS), flags=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255.0
    img *= 1.0 - alpha
    img += alpha * obj


def render(case: MotionCase, t: float, size: int | tuple[int, int] = 256) -> np.ndarray:
    """The scene at time t (0 = first frame, 1 = second) as RGB uint8 (H, W, 3)."""
    W, H = (size, size) if isinstance(size, int) else size
    img = _background(case, t, W, H).astype(np.float32)
    for sp in case.sprites:
        _sprite(img, sp, t, W, H)
    img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)

