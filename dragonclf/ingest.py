"""The one ingest path: bytes in, a normalised upright RGB JPEG out (or a reason).

Every image the app keeps (imports, uploads, downloads, files dropped in by hand)
goes through `normalise`. It decodes fully (so truncated files are caught, not
kept), refuses decompression bombs before decoding, fixes EXIF rotation, turns
every colour mode into plain RGB, shrinks to `max_side` and re-encodes as JPEG.
The pixel hash of the result identifies exact duplicates; a perceptual hash
(imagehash) finds near-duplicates.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dragonclf.config import IngestConfig
from dragonclf.errors import Refused
from dragonclf.phash_index import distance as phash_distance  # noqa: F401 - the Hamming distance, kept here by name

# Formats we accept (what Pillow calls them). Anything else is refused by name.
ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF", "HEIF"}


@dataclass
class Normalised:
    jpeg: bytes  # the file to store
    width: int
    height: int
    pixel_sha: str  # sha256 of the normalised pixels: equal images, equal hash
    phash: str  # perceptual hash (hex), for near-duplicates
    notes: list[str] = field(default_factory=list)  # what was changed on the way (for reports)

    @property
    def image_id(self) -> str:
        return self.pixel_sha[:16]


def sniff(head: bytes) -> str | None:
    """What the first bytes say this is: an image format, 'svg', 'html', or None."""
    h = head.lstrip()[:256].lower()
    if h.startswith(b"<svg") or (h.startswith(b"<?xml") and b"<svg" in head[:4096].lower()):
        return "svg"
    if h.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"{", b"[")) or h.startswith(b"<"):
        return "html"
    signatures = {
        b"\xff\xd8\xff": "jpeg",
        b"\x89PNG\r\n\x1a\n": "png",
        b"GIF87a": "gif",
        b"GIF89a": "gif",
        b"BM": "bmp",
        b"II*\x00": "tiff",
        b"MM\x00*": "tiff",
    }
    for sig, fmt in signatures.items():
        if head.startswith(sig):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1"):
        return "avif"
    return None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is laid onto white."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit grey: scale to 8 bits (a plain convert would clip everything to white)
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if (im.mode.startswith("I;16") or arr.max() > 255) else 255.0
        if im.mode == "F":
            top = max(float(arr.max()), 1.0)
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return im


def normalise(data: bytes, cfg: IngestConfig = IngestConfig()) -> Normalised:
    """Decode, check and normalise one image. Raises `Refused` with a reason."""
    if not data:
        raise Refused("empty", "the file is empty (0 bytes)")
    if len(data) > cfg.max_bytes:
        raise Refused("too-many-bytes", f"{len(data) / 1e6:.1f} MB is over the {cfg.max_bytes / 1e6:.0f} MB limit")
    kind = sniff(data[:4096])
    if kind == "svg":
        raise Refused("svg", "SVG drawings are not supported; save it as PNG or JPEG")
    if kind == "html":
        raise Refused("not-an-image", "this is a web page or text, not an image")
    notes: list[str] = []
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice it; we decide ourselves below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as e:
            raise Refused("too-many-pixels", str(e)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise Refused("not-an-image", f"not a readable image ({type(e).__name__})") from None
        if im.format not in ACCEPTED_FORMATS:
            raise Refused("unsupported-format", f"{im.format} images are not supported")
        w, h = im.size
        if w * h > cfg.max_pixels:
            raise Refused("too-many-pixels", f"{w}x{h} is over the {cfg.max_pixels / 1e6:.0f} megapixel limit")
        if min(w, h) < cfg.min_side:
            raise Refused("too-small", f"{w}x{h} is smaller than {cfg.min_side} px on a side")
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"animated ({im.n_frames} frames): first frame kept")
            im.seek(0)
        if im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK"):
            # Decode at a reduced DCT scale when the image is much larger than we keep:
            # still a full decode of the stream, several times faster for big photos.
            im.draft(im.mode, (cfg.max_side, cfg.max_side))
        try:
            im.load()
        except Image.DecompressionBombError as e:
            raise Refused("too-many-pixels", str(e)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            reason = "truncated" if "truncated" in str(e).lower() or isinstance(e, EOFError) else "unreadable"
            raise Refused(reason, f"the image data is damaged ({e})") from None
    try:
        orientation = im.getexif().get(0x0112, 1)
        upright = ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError) as e:  # broken EXIF block
        notes.append(f"EXIF orientation ignored ({type(e).__name__})")
        upright = im
        orientation = 1
    if orientation not in (1, None):
        notes.append("rotated upright (EXIF)")
    im = upright if upright is not None else im
    if im.mode != "RGB":
        notes.append(f"converted {im.mode} to RGB")
    im = _to_rgb(im)
    if max(im.size) > cfg.max_side:
        im.thumbnail((cfg.max_side, cfg.max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    pixel_sha = hashlib.sha256(f"{im.size}".encode() + im.tobytes()).hexdigest()
    out = io.BytesIO()
    im.save(out, "JPEG", quality=cfg.jpeg_quality, optimize=True)
    return Normalised(
        jpeg=out.getvalue(),
        width=im.width,
        height=im.height,
        pixel_sha=pixel_sha,
        phash=str(imagehash.phash(im)),
        notes=notes,
    )

