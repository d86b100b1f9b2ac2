"""Rendering frames to JPEG or PNG for people: the pure functions behind /rendered and
/thumbnail.

Grayscale follows PS3.3's pipeline: stored values -> Modality LUT (Rescale Slope/Intercept or a
Modality LUT Sequence) -> VOI (the requested window, else a VOI LUT Sequence, else the data
set's Window Center/Width, else the frame's range) -> presentation (MONOCHROME1 inverted).
For 8- and 16-bit data the whole pipeline is folded into one lookup table over every stored
value, so a 512x512 CT frame renders with one indexing pass.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from noctis.dicom.transcode import PixelLayout, decode_frame, native_array, native_frame

JPEG = "image/jpeg"
PNG = "image/png"
MEDIA_TYPES = (JPEG, PNG)
WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
# What a rendered image may be, whatever the viewport asks: 4096x4096 RGB is 48 MB.
MAX_VIEWPORT_SIDE = 8192
MAX_VIEWPORT_PIXELS = 4096 * 4096


class RenderError(ValueError):
    """A rendering parameter is invalid, or the frame cannot be shown."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    width: int
    height: int
    region: tuple[int, int, int, int] | None = None  # source x, y, width, height


def parse_window(text: str) -> Window:
    """``center,width[,function]`` as in PS3.18's ``window`` query parameter."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise RenderError("window is center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise RenderError(f"window center and width must be numbers, got {text!r}") from exc
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise RenderError("window width must be a positive number")
    function = parts[2].lower() if len(parts) == 3 else "linear"
    if function not in WINDOW_FUNCTIONS:
        raise RenderError(f"window function must be one of {', '.join(WINDOW_FUNCTIONS)}")
    if function == "linear" and width < 1:
        raise RenderError("a linear window needs a width of at least 1")
    return Window(center, width, function)


def parse_viewport(text: str) -> Viewport:
    """``vw,vh[,sx,sy,sw,sh]``: output size, optionally a source region."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise RenderError("viewport is width,height[,sx,sy,sw,sh]")
    try:
        numbers = [int(p) for p in parts]
    except ValueError as exc:
        raise RenderError(f"viewport values must be integers, got {text!r}") from exc
    width, height = numbers[0], numbers[1]
    if not (0 < width <= MAX_VIEWPORT_SIDE and 0 < height <= MAX_VIEWPORT_SIDE):
        raise RenderError(f"viewport width and height must be between 1 and {MAX_VIEWPORT_SIDE}")
    if width * height > MAX_VIEWPORT_PIXELS:
        raise RenderError(
            f"a viewport of {width}x{height} is more than {MAX_VIEWPORT_PIXELS} pixels (4096x4096)"
        )
    region = None
    if len(numbers) == 6:
        sx, sy, sw, sh = numbers[2:]
        if sx < 0 or sy < 0 or sw <= 0 or sh <= 0:
            raise RenderError("viewport source region must be non-negative with positive size")
        region = (sx, sy, sw, sh)
    return Viewport(width, height, region)


def parse_quality(text: str) -> int:
    try:
        quality = int(text)
    except ValueError as exc:
        raise RenderError(f"quality must be an integer, got {text!r}") from exc
    if not 1 <= quality <= 100:
        raise RenderError("quality must be between 1 and 100")
    return quality


def frame_array(image: Dataset, layout: PixelLayout, index: int, stored: bytes) -> np.ndarray:
    """The decoded pixels of one frame from its stored bytes (color as RGB)."""
    if layout.encapsulated:
        return decode_frame(image, stored)
    native = native_frame(image, layout, index, stored)
    fast = _plain_grayscale(image, native)
    return fast if fast is not None else native_array(image, native)


def _plain_grayscale(image: Dataset, native: bytes) -> np.ndarray | None:
    """Single-sample 8/16-bit little endian pixels straight from their bytes (the bulk of CT,
    MR, CR, DX), with the bits above Bits Stored cleared or sign-extended as pydicom does."""
    try:
        samples = int(image.get("SamplesPerPixel") or 1)
        bits = int(image.BitsAllocated)
        stored = int(image.get("BitsStored") or bits)
        signed = int(image.get("PixelRepresentation") or 0) == 1
        rows, columns = int(image.Rows), int(image.Columns)
    except (AttributeError, TypeError, ValueError):
        return None
    if samples != 1 or bits not in (8, 16) or len(native) < rows * columns * bits // 8:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    pixels = np.frombuffer(native, dtype=dtype, count=rows * columns).reshape(rows, columns)
    if stored < bits:
        shift = bits - stored
        pixels = (pixels << shift) >> shift if signed else pixels & ((1 << stored) - 1)
    return pixels


def render(
    image: Dataset,
    pixels: np.ndarray,
    *,
    media_type: str = JPEG,
    window: Window | None = None,
    viewport: Viewport | None = None,
    quality: int = 90,
    frame_index: int = 0,
) -> bytes:
    """An encoded JPEG or PNG of one frame's pixels."""
    return encode(to_display(image, pixels, window, frame_index), media_type, viewport, quality)


def to_display(
    image: Dataset, pixels: np.ndarray, window: Window | None = None, frame_index: int = 0
) -> np.ndarray:
    """8-bit display values: (rows, columns) gray or (rows, columns, 3) RGB."""
    photometric = str(image.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        return _to_eight_bits(apply_color_lut(pixels, image))
    if pixels.ndim == 3:
        return _to_eight_bits(pixels, int(image.get("BitsStored") or pixels.itemsize * 8))
    if pixels.dtype.kind == "b" or int(image.get("BitsAllocated") or 8) == 1:
        return (pixels.astype(np.uint8) * 255).astype(np.uint8)
    invert = photometric == "MONOCHROME1" or (
        str(image.get("PresentationLUTShape", "")).upper() == "INVERSE"
    )
    small_integers = pixels.dtype.itemsize <= 2 and pixels.dtype.kind in "iu"
    linear = _linear_parameters(image, pixels, window, frame_index)
    if small_integers and linear is not None:
        # The common case (rescale + window): one cached table over every stored value.
        return _lookup(_linear_lut(pixels.dtype.str, *linear, invert), pixels)
    transform = _grayscale_transform(image, pixels, window, frame_index)
    if small_integers:
        info = np.iinfo(pixels.dtype)
        lut = transform(np.arange(info.min, info.max + 1, dtype=np.int64))
        return _lookup(255 - lut if invert else lut, pixels)
    display = transform(pixels)
    return 255 - display if invert else display


def _lookup(lut: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """lut[value - dtype minimum] for 8/16-bit pixels, without widening the array."""
    if pixels.dtype.kind == "i":
        bits = pixels.dtype.itemsize * 8
        unsigned = pixels.view(f"u{pixels.dtype.itemsize}")
        return np.take(lut, unsigned ^ (1 << (bits - 1)))
    return np.take(lut, pixels)


def _linear_parameters(
    image: Dataset, pixels: np.ndarray, window: Window | None, frame_index: int
) -> tuple[float, float, float, float, str] | None:
    """(slope, intercept, center, width, function) when rescale and a window say it all."""
    if "ModalityLUTSequence" in image:
        return None
    chosen = window or _dataset_window(image, frame_index)
    if chosen is None:
        return None  # a VOI LUT Sequence, or the frame's own range
    slope, intercept = _rescale(image, frame_index)
    return slope, intercept, chosen.center, chosen.width, chosen.function


@functools.lru_cache(maxsize=64)
def _linear_lut(
    dtype: str,
    slope: float,
    intercept: float,
    center: float,
    width: float,
    function: str,
    invert: bool,
) -> np.ndarray:
    info = np.iinfo(np.dtype(dtype))
    domain = np.arange(info.min, info.max + 1, dtype=np.float64) * slope + intercept
    lut = apply_window(domain, Window(center, width, function))
    if invert:
        lut = 255 - lut
    lut.setflags(write=False)
    return lut


def _grayscale_transform(
    image: Dataset, pixels: np.ndarray, window: Window | None, frame_index: int
) -> Any:
    slope, intercept = _rescale(image, frame_index)
    has_modality_lut = "ModalityLUTSequence" in image

    def modality(values: np.ndarray) -> np.ndarray:
        if has_modality_lut:
            return np.asarray(apply_modality_lut(values, image), dtype=np.float64)
        return values.astype(np.float64) * slope + intercept

    chosen = window or _dataset_window(image, frame_index)
    if chosen is None and "VOILUTSequence" in image:
        item = image.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
        top = float((1 << bits) - 1) or 1.0

        def voi_lut(values: np.ndarray) -> np.ndarray:
            out = np.asarray(apply_voi(modality(values).astype(np.int64), image), np.float64)
            return np.clip(out * (255.0 / top), 0, 255).astype(np.uint8)

        return voi_lut
    if chosen is None:
        stored = modality(pixels)
        low, high = float(np.min(stored)), float(np.max(stored))
        chosen = Window((low + high) / 2, max(high - low, 1.0), "linear-exact")

    def windowed(values: np.ndarray) -> np.ndarray:
        return apply_window(modality(values), chosen)

    return windowed


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 window functions, to 0..255."""
    center, width = window.center, window.width
    if window.function == "sigmoid":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif window.function == "linear-exact":
        out = ((values - center) / width + 0.5) * 255.0
    else:
        out = (
            ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
            if width > 1
            else (np.where(values > center - 0.5, 255.0, 0.0))
        )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _rescale(image: Dataset, frame_index: int) -> tuple[float, float]:
    slope, intercept = image.get("RescaleSlope"), image.get("RescaleIntercept")
    if slope is None or intercept is None:
        item = _functional_group(image, "PixelValueTransformationSequence", frame_index)
        if item is not None:
            slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
    try:
        return float(slope if slope not in (None, "") else 1), float(intercept or 0)
    except (TypeError, ValueError):
        return 1.0, 0.0


def _dataset_window(image: Dataset, frame_index: int) -> Window | None:
    source: Any = image
    if "WindowCenter" not in image or "WindowWidth" not in image:
        source = _functional_group(image, "FrameVOILUTSequence", frame_index)
        if source is None or "WindowCenter" not in source:
            return None
    try:
        center, width = _first(source.WindowCenter), _first(source.WindowWidth)
    except (TypeError, ValueError, AttributeError):
        return None
    if width <= 0:
        return None
    function = str(source.get("VOILUTFunction", "LINEAR")).lower().replace("_", "-")
    function = function if function in WINDOW_FUNCTIONS else "linear"
    return Window(center, width if function != "linear" else max(width, 1.0), function)


def _first(value: Any) -> float:
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _functional_group(image: Dataset, sequence: str, frame_index: int) -> Dataset | None:
    # Enhanced multi-frame objects keep rescale and window in functional groups. Per-frame
    # groups are not kept in the cached image attributes, so the shared group is used.
    for group in ("SharedFunctionalGroupsSequence",):
        groups = image.get(group)
        if groups:
            item = groups[0]
            if sequence in item and item[sequence].value:
                return item[sequence].value[0]  # type: ignore[no-any-return]
    return None


def _to_eight_bits(pixels: np.ndarray, bits: int | None = None) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if bits is None:
        bits = 16 if pixels.max(initial=0) > 255 else 8
    shift = max(0, bits - 8)
    return np.clip(pixels.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def encode(
    display: np.ndarray, media_type: str, viewport: Viewport | None = None, quality: int = 90
) -> bytes:
    picture = Image.fromarray(display)
    if viewport is not None:
        if viewport.region is not None:
            picture = picture.crop(_source_box(viewport.region, picture.width, picture.height))
        picture = fit(picture, viewport.width, viewport.height)
    out = io.BytesIO()
    if media_type == PNG:
        picture.save(out, format="PNG", compress_level=1)
    elif media_type == JPEG:
        picture.save(out, format="JPEG", quality=quality)
    else:
        raise RenderError(f"cannot render {media_type}")
    return out.getvalue()


def _source_box(
    region: tuple[int, int, int, int], width: int, height: int
) -> tuple[int, int, int, int]:
    """The requested source region clipped to the image: PIL would pad a larger one with
    black, allocating all of it (a region of 10^5 x 10^5 is 10 GB)."""
    x, y, w, h = region
    if x >= width or y >= height:
        raise RenderError(
            f"viewport source region starts at ({x},{y}), outside the {width}x{height} image"
        )
    return x, y, min(width, x + w), min(height, y + h)


def fit(picture: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to fit inside width x height, keeping the aspect ratio."""
    scale = min(width / picture.width, height / picture.height)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    if size == picture.size:
        return picture
    resample = Image.Resampling.BILINEAR if scale >= 0.5 else Image.Resampling.BOX
    return picture.resize(size, resample)
