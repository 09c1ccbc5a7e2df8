"""Procedural shapes: factor values, counter-based factor sampling, attributes and antialiased rendering.

Image i of a shapes dataset depends only on (seed, i) (`shape_factors`), so it is the same whatever the
number of images generated. `ShapesDataset` (pdae.data.embedded) wraps these functions; this module is
pure numpy and imports nothing of the project.
"""

from __future__ import annotations

import numpy as np

# Shapes: factor values. Colours are RGB in [0, 1]; the first two backgrounds are the dark ones.
SHAPE_NAMES = ("square", "circle", "triangle")
COLOUR_NAMES = ("red", "green", "blue", "yellow")
COLOURS = np.array([[0.90, 0.10, 0.10], [0.10, 0.75, 0.20], [0.15, 0.30, 0.95], [0.95, 0.85, 0.10]])
BACKGROUND_NAMES = ("black", "slate", "light_grey", "white")
BACKGROUNDS = np.array([[0.05, 0.05, 0.05], [0.20, 0.22, 0.28], [0.75, 0.75, 0.75], [0.95, 0.95, 0.95]])
SHAPE_SIZE_RANGE = (0.12, 0.25)  # half-extent s as a fraction of the image side
SHAPE_LARGE_THRESHOLD = 0.185    # is_large <=> s >= the midpoint of SHAPE_SIZE_RANGE
SHAPE_SUPERSAMPLE = 4            # sub-pixels per side when antialiasing
SHAPE_ATTRIBUTES = (
    "is_square", "is_circle", "is_triangle",       # shape factor
    "is_red", "is_green", "is_blue", "is_yellow",  # colour factor
    "is_large",                                    # half-extent s >= SHAPE_LARGE_THRESHOLD
    "is_left", "is_top",                           # centre x < 0.5, centre y < 0.5 (y grows downwards)
    "dark_background",                             # background is black or slate
)
SHAPE_LABEL_FACTORS = {"shape": SHAPE_NAMES, "colour": COLOUR_NAMES, "background": BACKGROUND_NAMES}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_uniform(seed: int, index: np.ndarray, stream: int) -> np.ndarray:
    """Uniforms in [0, 1) that depend only on (seed, index, stream): counter-based, no state."""
    index = np.asarray(index, dtype=np.uint64).reshape(-1)
    key = _splitmix64(np.full(index.shape, seed, dtype=np.uint64))
    h = _splitmix64(_splitmix64(key ^ index) ^ np.uint64(stream))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def shape_factors(seed: int, index: np.ndarray) -> dict[str, np.ndarray]:
    """Factors of shapes images `index` `[N]`: image i depends only on (seed, i).

    Returns `shape` (index into SHAPE_NAMES), `colour` (COLOUR_NAMES), `background`
    (BACKGROUND_NAMES), `size` (half-extent s / image side, uniform in SHAPE_SIZE_RANGE) and the
    centre `x`, `y` (fractions of the side, uniform in [s, 1 - s] so the shape is inside).
    """
    u = [_hash_uniform(seed, index, stream) for stream in range(6)]
    lo, hi = SHAPE_SIZE_RANGE
    size = lo + (hi - lo) * u[3]
    return {
        "shape": np.minimum((u[0] * len(SHAPE_NAMES)).astype(np.int64), len(SHAPE_NAMES) - 1),
        "colour": np.minimum((u[1] * len(COLOUR_NAMES)).astype(np.int64), len(COLOUR_NAMES) - 1),
        "background": np.minimum((u[2] * len(BACKGROUND_NAMES)).astype(np.int64), len(BACKGROUND_NAMES) - 1),
        "size": size,
        "x": size + (1.0 - 2.0 * size) * u[4],
        "y": size + (1.0 - 2.0 * size) * u[5],
    }


def shape_attributes(factors: dict[str, np.ndarray]) -> np.ndarray:
    """Binary attributes `[N, len(SHAPE_ATTRIBUTES)]` (0/1 float32) derived from the factors."""
    cols = [factors["shape"] == k for k in range(len(SHAPE_NAMES))]
    cols += [factors["colour"] == k for k in range(len(COLOUR_NAMES))]
    cols += [factors["size"] >= SHAPE_LARGE_THRESHOLD, factors["x"] < 0.5, factors["y"] < 0.5,
             factors["background"] < 2]
    return np.stack(cols, axis=1).astype(np.float32)


def shape_coverage(shape: int, size: float, x: float, y: float, image_size: int, antialias: bool = True) -> np.ndarray:
    """Fraction of each pixel covered by one shape, `[H, W]` float64 in [0, 1].

    With half-extent s = `size` and centre (x, y), in image-side units with y downwards: a square
    is |dx|, |dy| <= s (area 4 s^2), a circle dx^2 + dy^2 <= s^2 (area pi s^2), a triangle has its
    apex at (x, y - s) and its base on y + s from x - s to x + s (area 2 s^2). Antialiasing
    averages SHAPE_SUPERSAMPLE^2 sub-pixel samples per pixel; otherwise pixel centres are tested.
    Only the pixels of the bounding box (plus a one-pixel margin) are evaluated.
    """
    ss = SHAPE_SUPERSAMPLE if antialias else 1
    n = image_size * ss
    c0, c1 = max(int((x - size) * image_size) - 1, 0), min(int((x + size) * image_size) + 2, image_size)
    r0, r1 = max(int((y - size) * image_size) - 1, 0), min(int((y + size) * image_size) + 2, image_size)
    dx = (np.arange(c0 * ss, c1 * ss) + 0.5)[None, :] / n - x  # [1, w]  sub-pixel centres
    dy = (np.arange(r0 * ss, r1 * ss) + 0.5)[:, None] / n - y  # [h, 1]
    if shape == 0:
        inside = (np.abs(dx) <= size) & (np.abs(dy) <= size)
    elif shape == 1:
        inside = dx * dx + dy * dy <= size * size
    else:
        inside = (np.abs(dy) <= size) & (np.abs(dx) <= (dy + size) / 2.0)
    out = np.zeros((image_size, image_size))
    out[r0:r1, c0:c1] = inside.reshape(r1 - r0, ss, c1 - c0, ss).sum(axis=(1, 3)) / (ss * ss)
    return out


def render_shapes(factors: dict[str, np.ndarray], image_size: int, antialias: bool = True) -> np.ndarray:
    """RGB images `[N, 3, H, W]` float32 in [-1, 1]: background + (colour - background) * coverage."""
    out = np.empty((len(factors["shape"]), 3, image_size, image_size), dtype=np.float32)
    for i in range(len(out)):
        cover = shape_coverage(int(factors["shape"][i]), float(factors["size"][i]), float(factors["x"][i]),
                               float(factors["y"][i]), image_size, antialias)  # [H, W]
        fg, bg = COLOURS[factors["colour"][i]], BACKGROUNDS[factors["background"][i]]  # [3]
        out[i] = (bg[:, None, None] + (fg - bg)[:, None, None] * cover) * 2.0 - 1.0
    return out
