"""Image quality flags for Clean: tiny, very dark or bright, near-blank, blurry, extreme aspect ratio.

Measured on a 256 px greyscale copy so the numbers do not depend on the stored
size. Blur uses the Crété-Roffet no-reference metric (2007): blur the image
again and see how much of its fine variation survives; a sharp picture loses a
lot, a blurry one hardly anything. Unlike the variance of the Laplacian it does
not flag a sharp object on a plain white background (common in product
photos). Measurements are cached per image sha256, so a second pass is free.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from dragonclf import config

MEASURE_SIDE = 256
MEASURE_VERSION = 1  # bump when a measurement changes, so the cache is refreshed


@dataclass(frozen=True)
class Thresholds:
    tiny_side: int = 96  # shortest side in pixels below which an image is "tiny"
    dark_mean: float = 30.0  # mean grey level (0-255) below which an image is "very dark"
    bright_mean: float = 235.0  # mean grey level above which, together with bright_p5, it is "washed out"
    bright_p5: float = 200.0  # ... and the darkest 5% of pixels are still this bright
    blank_std: float = 10.0  # grey-level standard deviation below which an image is "near-blank"
    blur: float = 0.65  # Crété-Roffet blur (0 sharp .. 1 flat) above which an image is "blurry"
    aspect: float = 3.0  # long side / short side above which the aspect ratio is "extreme"


@dataclass
class Measures:
    width: int
    height: int
    mean: float
    std: float
    p5: float
    blur: float


def _box_blur(g: np.ndarray, axis: int, k: int = 9) -> np.ndarray:
    pad = [(k // 2, k // 2) if ax == axis else (0, 0) for ax in range(2)]
    c = np.cumsum(np.pad(g, pad, mode="edge"), axis=axis, dtype=np.float64)
    zero = np.zeros_like(c.take([0], axis=axis))
    c = np.concatenate([zero, c], axis=axis)
    n = g.shape[axis]
    return (c.take(range(k, k + n), axis=axis) - c.take(range(0, n), axis=axis)) / k


def blur_metric(g: np.ndarray) -> float:
    """Crété-Roffet blur of a greyscale array: 0 = sharp, 1 = nothing left to blur."""
    worst = 0.0
    for axis in (0, 1):
        if g.shape[axis] < 2:
            return 1.0
        d_orig = np.abs(np.diff(g, axis=axis))
        d_blur = np.abs(np.diff(_box_blur(g, axis), axis=axis))
        total = d_orig.sum()
        if total <= 0:
            return 1.0
        lost = np.maximum(0.0, d_orig - d_blur).sum()
        worst = max(worst, float((total - lost) / total))
    return worst


def measure(path) -> Measures:
    with Image.open(path) as im:
        width, height = im.size
        g = im.convert("L")
        g.thumbnail((MEASURE_SIDE, MEASURE_SIDE))
        a = np.asarray(g, dtype=np.float32)
    return Measures(width, height, float(a.mean()), float(a.std()), float(np.percentile(a, 5)), blur_metric(a))


def flags(m: Measures, t: Thresholds = Thresholds()) -> list[tuple[str, float, str]]:
    """(flag, severity 0..1, reason) for each problem found; empty when the image looks fine."""
    out = []
    short, long = min(m.width, m.height), max(m.width, m.height)
    if short < t.tiny_side:
        out.append(("tiny", 1 - short / t.tiny_side, f"tiny: {m.width}x{m.height} px"))
    if m.std < t.blank_std:
        out.append(("near-blank", 1 - m.std / t.blank_std, f"near-blank: almost one flat colour (contrast {m.std:.1f})"))
    if m.mean < t.dark_mean:
        out.append(("dark", 1 - m.mean / t.dark_mean, f"very dark: mean brightness {m.mean:.0f}/255"))
    if m.mean > t.bright_mean and m.p5 > t.bright_p5:
        out.append(("bright", (m.mean - t.bright_mean) / (255 - t.bright_mean),
                    f"very bright: mean brightness {m.mean:.0f}/255"))
    if m.blur > t.blur and m.std >= t.blank_std:  # a blank image is "blurry" too; say blank once
        out.append(("blurry", (m.blur - t.blur) / (1 - t.blur), f"blurry (blur {m.blur:.2f}, sharp photos < {t.blur})"))
    if short and long / short > t.aspect:
        out.append(("aspect", min(1.0, (long / short - t.aspect) / t.aspect),
                    f"extreme aspect ratio {long / short:.1f}:1"))
    return out


def _cache() -> sqlite3.Connection:
    path = config.cache_root() / "quality.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute("CREATE TABLE IF NOT EXISTS measures(sha256 TEXT, version INT, width INT, height INT, mean REAL,"
                " std REAL, p5 REAL, blur REAL, PRIMARY KEY(sha256, version))")
    return con


def measure_rows(rows, progress=None) -> dict[str, Measures]:
    """{image id: Measures} for store rows (need .id, .sha256, .path), cached by sha256."""
    rows = list(rows)
    con = _cache()
    try:
        cached = {}
        for r in con.execute("SELECT sha256, width, height, mean, std, p5, blur FROM measures WHERE version=?",
                             (MEASURE_VERSION,)):
            cached[r[0]] = Measures(*r[1:])
        out, new = {}, []
        for n, row in enumerate(rows):
            m = cached.get(row.sha256)
            if m is None:
                m = measure(row.path)
                cached[row.sha256] = m
                new.append((row.sha256, MEASURE_VERSION, *asdict(m).values()))
            out[row.id] = m
            if progress is not None and n % 50 == 0:
                progress(n / max(len(rows), 1), f"Checking image quality: {n}/{len(rows)}")
        if new:
            con.executemany("INSERT OR REPLACE INTO measures VALUES (?,?,?,?,?,?,?,?)", new)
            con.commit()
        return out
    finally:
        con.close()
