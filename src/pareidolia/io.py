"""Reading and writing photos safely.

Reading applies the EXIF orientation, converts every colour mode (grayscale, palette, CMYK,
16-bit, alpha) to 8-bit RGB, and refuses truncated files and decompression bombs with an
:class:`ImageError` that names the file. A photo whose ICC profile is not an RGB (or, for a grey
photo, grey) one, such as a CMYK profile, is converted to sRGB with that profile and its profile
is dropped, so no output carries a profile of another colour space. Writing is atomic (temporary
file in the same folder, then rename), never replaces an existing file unless asked, keeps the
ICC profile, and drops EXIF/XMP (location, camera, maker) unless the caller keeps it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from pareidolia.errors import UserError, os_problem

with contextlib.suppress(ImportError):  # HEIC/HEIF only when the optional plugin is installed
    import pillow_heif

    pillow_heif.register_heif_opener()

MAX_PIXELS = 100_000_000
"""Largest image accepted (100 megapixels): larger files are refused as possible decompression
bombs. A 20,000 × 20,000 photo (400 MP) would need 1.2 GB as RGB before any processing."""

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"}
)


class ImageError(UserError):
    """A file that cannot be used as a photo; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass
class Photo:
    """A decoded photo: RGB pixels plus what is needed to write it back faithfully."""

    path: Path
    rgb: np.ndarray  # (H, W, 3) uint8, EXIF orientation applied
    format: str  # Pillow format name of the source, e.g. "JPEG", "PNG"
    alpha: np.ndarray | None = None  # (H, W) uint8 when the source had transparency
    icc_profile: bytes | None = None
    exif: bytes | None = field(default=None, repr=False)  # orientation reset to 1
    grey: bool = False  # the source had one colour channel (L, LA, 16-bit or float grey)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.rgb.shape[1], self.rgb.shape[0]


_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA"})  # P: an RGB palette


def _to_8bit_rgb(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert any Pillow mode to (RGB uint8, alpha uint8 or None)."""
    alpha = None
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
        grey = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        unit = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
        grey8 = np.round(unit * 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2), None
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        arr = np.asarray(rgba)
        alpha = np.ascontiguousarray(arr[:, :, 3])
        return np.ascontiguousarray(arr[:, :, :3]), alpha
    if img.mode == "RGB":
        return np.asarray(img).copy(), None
    return np.asarray(img.convert("RGB")).copy(), None


def icc_colour_space(icc: bytes | None) -> str | None:
    """The colour space an ICC profile describes (``RGB``, ``GRAY``, ``CMYK``, ``Lab`` …);
    None when there is no profile or it cannot be parsed."""
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError):
        return None
    return str(profile.profile.xcolor_space).strip() or None


def _to_srgb(img: Image.Image, icc: bytes) -> Image.Image | None:
    """``img`` converted to sRGB through its embedded profile ``icc``; None when the profile
    does not fit the image or the conversion fails."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            img, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
        )
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError):
        return None
    return converted if isinstance(converted, Image.Image) else None


def _foreign_profile(img: Image.Image, icc: bytes) -> bool:
    """Whether ``icc`` must not travel to the output: a source that is neither RGB nor grey
    (CMYK, Lab …), or a readable profile of another colour space than the pixels' (a CMYK
    profile on RGB pixels, an RGB one on grey pixels). An unreadable profile on RGB or grey
    pixels is kept as it is."""
    if img.mode not in _RGB_MODES | _GREY_MODES:
        return True
    space = icc_colour_space(icc)
    return space is not None and space != ("GRAY" if img.mode in _GREY_MODES else "RGB")


def _apply_profile(img: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """``img`` and the profile the output may carry: a foreign profile (:func:`_foreign_profile`)
    converts the pixels of a CMYK (Lab …) source to sRGB when it fits them, and is dropped
    either way; the pixels are then converted as if there were no profile."""
    if not icc or not _foreign_profile(img, icc):
        return img, icc
    if img.mode not in _RGB_MODES | _GREY_MODES:
        converted = _to_srgb(img, icc)
        if converted is not None:
            return converted, None
    return img, None


def _too_large(pixels: int) -> str:
    return (
        f"image has {pixels / 1e6:.0f} megapixels, more than the {MAX_PIXELS / 1e6:.0f} MP limit "
        "(refused as a possible decompression bomb); downscale it first"
    )


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(path, _too_large(width * height))


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
HEIF_HINT = "a HEIC/HEIF photo; reading it needs the plugin: pip install 'pareidolia[heif]'"


def _is_heif(path: Path) -> bool:
    """Whether the file starts like a HEIC/HEIF photo (an ISO-BMFF ``ftyp`` box with a HEIF
    brand), whatever its name."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        return False
    if head[4:8] != b"ftyp" or head[8:12] == b"avif":
        return False
    size = int.from_bytes(head[:4], "big")
    brands = [head[8:12]] + [head[i : i + 4] for i in range(16, min(size, len(head)), 4)]
    return any(b in _HEIF_BRANDS for b in brands)


def check_file(path: Path) -> None:
    """Raise :class:`ImageError` when ``path`` is plainly no photo, without reading it: missing,
    a folder, empty, or not even listable."""
    try:
        if not path.exists():
            raise ImageError(path, "no such file")
        if path.is_dir():
            raise ImageError(path, "is a folder, not an image")
        if path.stat().st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
    except OSError as e:
        raise ImageError(path, f"cannot read the file: {os_problem(e)}") from None


def read_photo(path: Path | str) -> Photo:
    """Decode ``path`` into a :class:`Photo`; raise :class:`ImageError` on any problem."""
    path = Path(path)
    check_file(path)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning starts below our limit; our check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_pixels(path, *img.size)
                frames = int(getattr(img, "n_frames", 1) or 1)
                animated = frames > 1 and getattr(img, "is_animated", False)
                if animated and img.format in ("GIF", "WEBP", "PNG"):  # not a camera's MPO
                    raise ImageError(
                        path,
                        f"animated {img.format or 'image'} ({frames} frames); only still photos "
                        "are protected: save the frame you want as a PNG or JPEG first",
                    )
                fmt = img.format or path.suffix.lstrip(".").upper()
                img.load()
                icc = img.info.get("icc_profile")
                exif = img.getexif()
                oriented = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageError(
            path, _too_large(int(found.group(1)) if found else MAX_PIXELS + 1)
        ) from None
    except UnidentifiedImageError:
        if _is_heif(path):
            raise ImageError(path, HEIF_HINT) from None
        raise ImageError(path, "not an image Pillow can read (unknown or corrupt format)") from None
    except OSError as e:
        if e.errno is None:  # Pillow's decoding errors carry no errno
            raise ImageError(
                path, f"cannot decode image ({e}); the file is truncated or corrupt"
            ) from None
        raise ImageError(path, f"cannot read the file: {os_problem(e)}") from None
    except (SyntaxError, ValueError) as e:
        raise ImageError(
            path, f"cannot decode image ({e}); the file is truncated or corrupt"
        ) from None
    oriented, icc = _apply_profile(oriented, icc)
    grey = oriented.mode in _GREY_MODES
    rgb, alpha = _to_8bit_rgb(oriented)
    exif_bytes = None
    if exif:
        exif[0x0112] = 1  # orientation is already applied to the pixels
        exif_bytes = exif.tobytes()
    return Photo(
        path=path, rgb=rgb, format=fmt, alpha=alpha, icc_profile=icc, exif=exif_bytes, grey=grey
    )


SAVE_FORMATS = {  # output suffix → Pillow format
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
"""Output formats that keep an alpha channel (JPEG and BMP drop it)."""
_FORMAT_SUFFIX = {"PNG": ".png", "WEBP": ".webp", "TIFF": ".tif"}


def is_transparent(photo: Photo) -> bool:
    """Whether ``photo`` has an alpha channel with a pixel that is not fully opaque."""
    return photo.alpha is not None and bool((photo.alpha < 255).any())


def encode_photo(
    rgb: np.ndarray,
    fmt: str,
    *,
    alpha: np.ndarray | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 95,
    grey: bool = False,
) -> bytes:
    """Encode pixels to bytes in format ``fmt`` (JPEG at ``quality``, 4:4:4 chroma). With
    ``grey`` and three equal channels (a grey photo whose edit kept its chroma), one channel
    is written, as the source had."""
    pixels = np.ascontiguousarray(rgb, dtype=np.uint8)
    if (
        grey
        and (pixels[..., 0] == pixels[..., 1]).all()
        and (pixels[..., 1] == pixels[..., 2]).all()
    ):
        img = Image.fromarray(np.ascontiguousarray(pixels[..., 0]), "L")
    else:
        img = Image.fromarray(pixels, "RGB")
    if alpha is not None and fmt in ALPHA_FORMATS:
        img.putalpha(Image.fromarray(alpha, "L"))
    kwargs: dict[str, object] = {}
    grey_profile = icc_colour_space(icc_profile) == "GRAY"
    if icc_profile and (img.mode in ("L", "LA") or not grey_profile):
        kwargs["icc_profile"] = icc_profile  # a grey photo's profile only on grey pixels
    if exif:
        kwargs["exif"] = exif
    if fmt == "JPEG":
        kwargs.update(quality=quality, subsampling=0, optimize=True)
    elif fmt == "WEBP":
        kwargs.update(quality=quality)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _new_temporary(path: Path) -> tuple[int, str]:
    """A new, empty temporary file beside ``path``, open for writing: (descriptor, name). It is
    created with mode 0666, which the kernel narrows by the process umask as for any new file
    (``mkstemp``'s 0600 would hide outputs), so the umask is never read or changed (changing
    it races with other threads, e.g. the web server's)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def atomic_write_bytes(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never
    leaves a partial file; refuse to replace an existing file (or symbolic link, even a
    dangling one) unless ``overwrite``. Any :class:`OSError` (a full disk, a read-only or
    removed drive) propagates after the temporary file is removed."""
    path = Path(path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path}: already exists; not overwriting")
    fd, tmp = _new_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):  # the original error matters, not this one
            os.unlink(tmp)
        raise


def write_photo(
    path: Path | str,
    rgb: np.ndarray,
    *,
    like: Photo | None = None,
    keep_metadata: bool = False,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write ``rgb`` atomically to ``path``; format from the suffix. With ``like``, its alpha
    channel and ICC profile are carried over, and its EXIF only when ``keep_metadata``."""
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(
            path, f"cannot write format {path.suffix!r}; use one of {sorted(SAVE_FORMATS)}"
        )
    data = encode_photo(
        rgb,
        fmt,
        alpha=like.alpha if like is not None else None,
        icc_profile=like.icc_profile if like is not None else None,
        exif=like.exif if (like is not None and keep_metadata) else None,
        quality=quality,
        grey=like.grey if like is not None else False,
    )
    atomic_write_bytes(path, data, overwrite=overwrite)
    return path


def output_ext(src: Path) -> str:
    """The suffix an output of ``src`` gets (its own where it can be written, else ``.png``),
    before a transparent photo's own fallback (:func:`output_path_for`)."""
    return src.suffix if src.suffix.lower() in SAVE_FORMATS else ".png"


def output_path_for(
    src: Path, out_dir: Path | None, suffix: str = "_protected", *, like: Photo | None = None
) -> Path:
    """``photo.jpg`` → ``OUT/photo_protected.jpg``; a free name (``_protected-2`` …) if taken.
    HEIC inputs are written as PNG (Pillow cannot encode HEIC without the plugin's encoder).
    When ``like`` (the photo read from ``src``) is transparent and the name's format cannot
    keep its alpha (JPEG, BMP), its own format is used if it can (a PNG named ``.jpg`` gets
    ``.png``), else PNG."""
    folder = out_dir if out_dir is not None else src.parent
    ext = output_ext(src)
    if like is not None and SAVE_FORMATS[ext.lower()] not in ALPHA_FORMATS and is_transparent(like):
        ext = _FORMAT_SUFFIX.get(like.format, ".png")
    candidate = folder / f"{src.stem}{suffix}{ext}"
    n = 2
    while os.path.lexists(candidate):  # a dangling symbolic link takes a name too
        candidate = folder / f"{src.stem}{suffix}-{n}{ext}"
        n += 1
    return candidate


def earlier_outputs(src: Path, files: Iterable[Path], suffix: str = "_protected") -> list[Path]:
    """The outputs among ``files`` (an output folder's files) that earlier runs wrote under
    ``src``'s name, in the order :func:`output_path_for` hands the names out:
    ``photo_protected.jpg``, then ``photo_protected-2.jpg``, ``-3`` …, in the suffix it gives
    ``src`` or in PNG (its fallback). Several photos of one name (``a/x.jpg``, ``b/x.jpg``
    into one folder) share them, in the order they were protected."""
    name = re.compile(
        re.escape(src.stem + suffix)
        + r"(?:-([0-9]+))?(?:"
        + re.escape(output_ext(src))
        + r"|\.png)",
        re.IGNORECASE,
    )
    found = []
    for p in files:
        m = name.fullmatch(p.name)
        if m is not None:
            found.append((int(m.group(1) or 1), p.name, p))
    return [p for _, _, p in sorted(found)]


def iter_image_files(paths: list[Path]) -> list[Path]:
    """Expand files and folders (recursively) into the image files to process, sorted."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(
                sorted(
                    q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        else:
            found.append(p)
    return found
