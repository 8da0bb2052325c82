"""The ingest pipeline: each bad or odd input is refused with a reason or normalised."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes
from dragonclf.config import IngestConfig
from dragonclf.errors import Refused
from dragonclf.ingest import normalise, phash_distance


def decoded(norm):
    im = Image.open(io.BytesIO(norm.jpeg))
    assert im.format == "JPEG" and im.mode == "RGB"
    return im


def refused_reason(data, cfg=IngestConfig()):
    with pytest.raises(Refused) as e:
        normalise(data, cfg)
    return e.value.reason


def png_header_only(w, h):
    """A PNG that declares w x h pixels but carries almost no data: a bomb's header."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def test_real_photo_is_stored_as_rgb_jpeg_within_max_side(photo_files):
    data = photo_files["fishes"][0].read_bytes()
    norm = normalise(data, IngestConfig(max_side=128))
    im = decoded(norm)
    assert max(im.size) == 128 and (norm.width, norm.height) == im.size
    assert len(norm.pixel_sha) == 64 and len(norm.phash) == 16


def test_same_pixels_same_hash_and_a_small_change_is_a_near_duplicate(photo_files):
    data = photo_files["tools"][0].read_bytes()
    a, b = normalise(data), normalise(data)
    assert a.pixel_sha == b.pixel_sha
    im = Image.open(io.BytesIO(data)).convert("RGB")
    buf = io.BytesIO()
    im.resize((im.width - 10, im.height - 7)).save(buf, "PNG")
    c = normalise(buf.getvalue())
    assert c.pixel_sha != a.pixel_sha
    assert phash_distance(a.phash, c.phash) <= IngestConfig().near_dup_distance


def test_truncated_jpeg_is_refused(photo_files):
    buf = io.BytesIO()
    Image.open(photo_files["fishes"][1]).convert("RGB").save(buf, "JPEG")
    assert refused_reason(buf.getvalue()[: len(buf.getvalue()) // 2]) == "truncated"


def test_zero_bytes_html_and_text_are_refused():
    assert refused_reason(b"") == "empty"
    assert refused_reason(b"<!DOCTYPE html><html><body>Not found</body></html>") == "not-an-image"
    assert refused_reason(b"just some text, named cat.jpg") == "not-an-image"


def test_svg_is_refused_with_its_own_reason():
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"></svg>'
    assert refused_reason(svg) == "svg"


def test_20000_square_png_is_refused_before_decoding():
    assert refused_reason(png_header_only(20000, 20000)) == "too-many-pixels"
    # below Pillow's own error limit too: our limit decides
    assert refused_reason(png_header_only(9000, 9000), IngestConfig(max_pixels=50_000_000)) == "too-many-pixels"


def test_tiny_image_is_refused():
    assert refused_reason(jpeg_bytes(size=(20, 400))) == "too-small"


def test_animated_gif_keeps_the_first_frame():
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    norm = normalise(buf.getvalue())
    r, g, b = decoded(norm).getpixel((32, 32))
    assert r > 200 and b < 60
    assert any("first frame" in n for n in norm.notes)


def test_cmyk_jpeg_becomes_rgb():
    buf = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(buf, "JPEG")  # pure red in CMYK
    r, g, b = decoded(normalise(buf.getvalue())).getpixel((32, 32))
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_not_clipped():
    arr = np.full((64, 64), 30000, dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    r, g, b = decoded(normalise(buf.getvalue())).getpixel((32, 32))
    assert abs(r - 30000 / 65535 * 255) < 6 and r == g == b


def test_palette_png_transparency_goes_onto_white():
    im = Image.new("P", (64, 64), 0)
    im.putpalette([0, 0, 0] + [255, 0, 0] + [0] * 762)
    for x in range(32):
        for y in range(64):
            im.putpixel((x, y), 1)  # left half red, right half index 0 = transparent
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)
    out = decoded(normalise(buf.getvalue()))
    assert out.getpixel((10, 32))[0] > 200 and out.getpixel((10, 32))[1] < 60
    assert min(out.getpixel((54, 32))) > 240  # transparent -> white, not black


def test_exif_rotated_jpeg_is_stored_upright():
    im = Image.new("RGB", (200, 100), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 100, 100))  # left half red as stored on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    norm = normalise(buf.getvalue())
    out = decoded(norm)
    assert out.size == (100, 200)  # portrait, as a viewer shows it
    assert out.getpixel((50, 20))[0] > 200  # the red half ends up on top
    assert "rotated upright (EXIF)" in norm.notes


def test_huge_file_is_refused_by_bytes():
    assert refused_reason(b"\xff\xd8\xff" + b"\0" * 2000, IngestConfig(max_bytes=1000)) == "too-many-bytes"
