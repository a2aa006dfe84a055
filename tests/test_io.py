"""Image I/O: colour modes, EXIF orientation, bad files, atomic writes, metadata stripping."""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pareidolia.io import (
    MAX_PIXELS,
    ImageError,
    atomic_write_bytes,
    earlier_outputs,
    iter_image_files,
    output_path_for,
    read_photo,
    write_photo,
)

GPS_IFD = 0x8825
MAKE, MODEL, ORIENTATION = 0x010F, 0x0110, 0x0112


def _gradient(w: int = 64, h: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "RGB"])
def test_every_colour_mode_becomes_8bit_rgb(tmp_path: Path, mode: str) -> None:
    src = Image.fromarray(_gradient())
    if mode == "I;16":
        img = Image.fromarray(np.asarray(src.convert("L")).astype(np.uint16) * 257)
    else:
        img = src.convert(mode)
    ext = ".tif" if mode == "CMYK" else ".png"
    p = tmp_path / f"x{ext}"
    img.save(p)
    photo = read_photo(p)
    assert photo.rgb.dtype == np.uint8 and photo.rgb.shape == (48, 64, 3)
    if mode in ("LA", "RGBA"):
        assert photo.alpha is not None and photo.alpha.shape == (48, 64)
    if mode == "I;16":  # 16-bit scaled down, not clipped
        assert photo.rgb.max() > 200 and photo.rgb[:, :, 0].std() > 20


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = _gradient(64, 48)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # rotate 90° clockwise to display
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, exif=exif.tobytes(), quality=95)
    photo = read_photo(p)
    assert photo.rgb.shape == (64, 48, 3)
    expected = np.rot90(arr, k=-1)
    assert np.abs(photo.rgb.astype(int) - expected.astype(int)).mean() < 6


@pytest.mark.parametrize(
    "content, needle",
    [(b"", "empty"), (b"not an image at all", "not an image"), (None, "truncated")],
)
def test_bad_files_raise_image_error_naming_the_file(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    p = tmp_path / "bad.jpg"
    if content is None:
        buf = io.BytesIO()
        Image.fromarray(_gradient(256, 256)).save(buf, format="JPEG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    p.write_bytes(content)
    with pytest.raises(ImageError) as e:
        read_photo(p)
    assert str(p) in str(e.value) and needle in str(e.value)


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A valid 1×1 PNG whose header claims ``width`` × ``height`` (no pixels stored)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 4  # signature, then chunk length; chunk type "IHDR" follows
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 4 + 13]))
    data[ihdr + 4 + 13 : ihdr + 4 + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("side", [10_200, 20_000])
def test_huge_image_is_refused_without_decoding(tmp_path: Path, side: int) -> None:
    p = tmp_path / "huge.png"
    _png_claiming_size(p, side, side)
    assert side * side > MAX_PIXELS
    with pytest.raises(ImageError, match="megapixels"):
        read_photo(p)


def test_write_is_atomic_and_never_overwrites(tmp_path: Path) -> None:
    p = tmp_path / "out.bin"
    atomic_write_bytes(p, b"one")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"one"
    assert [q.name for q in tmp_path.iterdir()] == ["out.bin"]  # no temp files left


def test_metadata_stripped_by_default_icc_kept(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[MAKE] = "Camera Maker"
    exif[MODEL] = "Model X"
    exif[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 12.0)}
    icc = b"\x00fake-icc-profile"
    src = tmp_path / "in.jpg"
    Image.fromarray(_gradient()).save(src, exif=exif.tobytes(), icc_profile=icc, quality=95)
    photo = read_photo(src)
    stripped = write_photo(tmp_path / "stripped.jpg", photo.rgb, like=photo)
    kept = write_photo(tmp_path / "kept.jpg", photo.rgb, like=photo, keep_metadata=True)
    with Image.open(stripped) as im:
        assert len(im.getexif()) == 0
        assert im.info.get("icc_profile") == icc
    with Image.open(kept) as im:
        assert im.getexif()[MAKE] == "Camera Maker"


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


_D50 = _s15(0.9642) + _s15(1.0) + _s15(0.8249)


def _icc(device_class: bytes, space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    """An ICC v2 profile with a description, a white point, a copyright and ``tags``."""
    text = b"test profile\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    every = {
        b"desc": desc,
        b"wtpt": b"XYZ " + bytes(4) + _D50,
        b"cprt": b"text" + bytes(4) + b"public domain\0",
        **tags,
    }
    offset = 128 + 4 + 12 * len(every)
    table, data = struct.pack(">I", len(every)), b""
    for sig, body in every.items():
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (
        struct.pack(">I", offset + len(data)) + bytes(4) + struct.pack(">I", 0x02100000)
        + device_class + space + pcs + bytes(12) + b"acsp" + bytes(28) + _D50 + bytes(48)
    )  # fmt: skip
    assert len(header) == 128
    return header + table + data


def _cmyk_profile() -> bytes:
    """A small real CMYK printer profile (Lab PCS, a 2-point lut16 A2B0), made here since
    neither Pillow nor the venv ships one. Its colours differ on purpose from the naive CMYK →
    RGB formula: cyan ink only halves the lightness, magenta turns red (+a*) and yellow turns
    blue (−b*), so only a conversion through the profile gives these colours."""
    clut = []
    for c, m, y, k in np.ndindex(2, 2, 2, 2):  # the first channel varies slowest
        lab = (100 * (1 - k) * (1 - 0.5 * c), 60 * m, -60 * y)
        clut += [round(lab[0] * 652.8), round((lab[1] + 128) * 256), round((lab[2] + 128) * 256)]
    lut = (
        b"mft2" + bytes(4) + bytes([4, 3, 2, 0])
        + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
        + struct.pack(">HH", 2, 2)
        + struct.pack(">8H", *[0, 65535] * 4)
        + struct.pack(f">{len(clut)}H", *clut)
        + struct.pack(">6H", *[0, 65535] * 3)
    )  # fmt: skip
    return _icc(b"prtr", b"CMYK", b"Lab ", {b"A2B0": lut})


def _grey_profile() -> bytes:
    """A grey display profile (gamma 2.2)."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256))
    return _icc(b"mntr", b"GRAY", b"XYZ ", {b"kTRC": curve})


def _cmyk_patches() -> Image.Image:
    """Four 8 × 8 patches: white, cyan, magenta and yellow ink."""
    inks = np.array([[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0]], np.uint8)
    return Image.fromarray(np.repeat(np.repeat(inks[None], 8, 0), 8, 1), "CMYK")


def test_cmyk_profile_converts_the_pixels_and_is_not_copied(tmp_path: Path) -> None:
    from PIL import ImageCms

    icc = _cmyk_profile()
    src = tmp_path / "cmyk.jpg"
    _cmyk_patches().save(src, quality=100, icc_profile=icc)
    with Image.open(src) as img:
        assert img.mode == "CMYK" and img.info["icc_profile"] == icc
        cmyk = img.copy()
    photo = read_photo(src)
    assert photo.icc_profile is None
    srgb = ImageCms.createProfile("sRGB")
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    expected = np.asarray(ImageCms.profileToProfile(cmyk, profile, srgb, outputMode="RGB"))
    assert np.abs(photo.rgb.astype(int) - expected).max() <= 1  # through the profile …
    naive = np.asarray(cmyk.convert("RGB"))
    assert np.abs(photo.rgb.astype(int) - naive).max() > 100  # … not the naive formula
    for name in ("out.jpg", "out.png", "out.tif", "out.webp"):
        with Image.open(write_photo(tmp_path / name, photo.rgb, like=photo)) as out:
            assert out.mode == "RGB" and "icc_profile" not in out.info, name


def test_a_profile_of_another_colour_space_is_dropped(tmp_path: Path) -> None:
    """A CMYK file whose profile cannot be used is converted without it; a CMYK profile on RGB
    pixels, or a grey one on an RGB output, is not written; an RGB photo keeps its sRGB one and
    a grey photo written grey its grey one."""
    from PIL import ImageCms

    broken = tmp_path / "broken.jpg"
    _cmyk_patches().save(broken, quality=100, icc_profile=b"\x00not-a-profile")
    rgb_cmyk = tmp_path / "rgb-cmyk.png"
    Image.fromarray(_gradient()).save(rgb_cmyk, icc_profile=_cmyk_profile())
    for src in (broken, rgb_cmyk):
        photo = read_photo(src)
        assert photo.icc_profile is None, src.name
        with Image.open(write_photo(tmp_path / f"{src.stem}-out.jpg", photo.rgb, like=photo)) as o:
            assert "icc_profile" not in o.info, src.name
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "srgb.jpg"
    Image.fromarray(_gradient()).save(src, quality=95, icc_profile=srgb)
    photo = read_photo(src)
    with Image.open(write_photo(tmp_path / "srgb-out.jpg", photo.rgb, like=photo)) as out:
        assert out.info.get("icc_profile") == srgb
    grey_src = tmp_path / "grey.png"
    Image.fromarray(_gradient()[..., 0], "L").save(grey_src, icc_profile=_grey_profile())
    photo = read_photo(grey_src)
    assert photo.grey and photo.icc_profile == _grey_profile()  # kept for a grey output
    with Image.open(write_photo(tmp_path / "grey-out.png", photo.rgb, like=photo)) as out:
        assert out.mode == "L" and out.info.get("icc_profile") == _grey_profile()
    coloured = photo.rgb.copy()
    coloured[..., 0] //= 2  # an edit that tinted the photo: written as RGB
    with Image.open(write_photo(tmp_path / "tinted.png", coloured, like=photo)) as out:
        assert out.mode == "RGB" and "icc_profile" not in out.info


def test_alpha_survives_png_roundtrip(tmp_path: Path) -> None:
    rgba = np.dstack([_gradient(), np.full((48, 64), 128, np.uint8)])
    src = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(src)
    photo = read_photo(src)
    out = write_photo(tmp_path / "b.png", photo.rgb, like=photo)
    with Image.open(out) as im:
        assert im.mode == "RGBA" and np.asarray(im)[0, 0, 3] == 128


def test_transparency_is_never_dropped_for_the_name(tmp_path: Path) -> None:
    """A transparent PNG named .jpg (or .bmp) is written as PNG, alpha and all: JPEG and BMP
    cannot keep it. An opaque alpha channel loses nothing, so the name's format is kept."""
    alpha = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None], (48, 1))
    opaque = np.full((48, 64), 255, np.uint8)
    for name, a, expected in [
        ("clear.jpg", alpha, "clear_protected.png"),
        ("clear.bmp", alpha, "clear_protected.png"),
        ("opaque.jpg", opaque, "opaque_protected.jpg"),
    ]:
        src = tmp_path / name
        Image.fromarray(np.dstack([_gradient(), a]), "RGBA").save(src, format="PNG")
        photo = read_photo(src)
        dest = output_path_for(src, tmp_path / "out", like=photo)
        assert dest.name == expected
        dest.parent.mkdir(exist_ok=True)
        with Image.open(write_photo(dest, photo.rgb, like=photo)) as im:
            assert im.format == ("PNG" if dest.suffix == ".png" else "JPEG")
            if im.format == "PNG":
                assert im.mode == "RGBA" and np.array_equal(np.asarray(im)[:, :, 3], a)
        dest.unlink()
    webp = tmp_path / "clear.webp.jpg"  # a transparent WebP named .jpg stays WebP
    Image.fromarray(np.dstack([_gradient(), alpha]), "RGBA").save(webp, format="WEBP")
    assert output_path_for(webp, tmp_path, like=read_photo(webp)).name == (
        "clear.webp_protected.webp"
    )


def test_output_names_never_collide(tmp_path: Path) -> None:
    src = tmp_path / "p.jpg"
    first = output_path_for(src, tmp_path)
    assert first.name == "p_protected.jpg"
    first.write_bytes(b"x")
    assert output_path_for(src, tmp_path).name == "p_protected-2.jpg"


def test_earlier_outputs_are_found_by_name_in_the_order_names_are_given(tmp_path: Path) -> None:
    src = tmp_path / "p.jpg"
    out = tmp_path / "out"
    assert earlier_outputs(src, []) == []
    out.mkdir()

    def files(folder: Path) -> list[Path]:
        return list(folder.iterdir())

    for name in ("pp_protected.jpg", "p_protected-x.jpg", "p_protected.webp", "p.jpg"):
        (out / name).write_bytes(b"x")
    assert earlier_outputs(src, files(out)) == []
    for name in ("p_protected-10.jpg", "p_protected-2.JPG", "p_protected.jpg"):
        (out / name).write_bytes(b"x")
    (out / "p_protected-3.png").write_bytes(b"x")  # the fallback format (a transparent photo)
    assert [p.name for p in earlier_outputs(src, files(out))] == [
        "p_protected.jpg",
        "p_protected-2.JPG",
        "p_protected-3.png",
        "p_protected-10.jpg",
    ]
    assert earlier_outputs(tmp_path / "q.heic", files(out)) == []
    (out / "q_protected.png").write_bytes(b"x")  # HEIC is written as PNG
    assert earlier_outputs(tmp_path / "q.heic", files(out)) == [out / "q_protected.png"]


def test_folders_expand_recursively_to_images(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ["a.jpg", "sub/b.PNG", "sub/c.gif", "sub/notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in iter_image_files([tmp_path])] == ["a.jpg", "b.PNG", "c.gif"]


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path: Path) -> None:
    """Outputs get the permissions any new file would (0666 less the umask)."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "out.bin"
        atomic_write_bytes(path, b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_writing_never_touches_the_process_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The umask is process-wide: setting it, even for a moment, races with other threads."""

    def no_umask(mask: int) -> int:
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", no_umask)
    for name in ("a.bin", "b.bin"):
        atomic_write_bytes(tmp_path / name, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]  # no leftovers


WRITE_ERRORS = [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS]


@pytest.mark.parametrize("code", WRITE_ERRORS)
@pytest.mark.parametrize("step", ["write", "fsync", "link"])
def test_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, step: str
) -> None:
    """A full disk (or a failing, read-only or over-quota one) at any step of the write: the
    OSError reaches the caller and neither the output nor the temporary file stays behind."""

    def fail(*_args: object) -> None:
        raise OSError(code, os.strerror(code))

    if step == "write":
        monkeypatch.setattr(os, "fdopen", _failing_fdopen(os.fdopen, code))
    else:
        monkeypatch.setattr(os, step, fail)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(tmp_path / "out.jpg", b"x" * 1000)
    assert caught.value.errno == code
    assert list(tmp_path.iterdir()) == []


def _failing_fdopen(real: object, code: int) -> object:
    """``os.fdopen`` whose files fail on ``write`` with ``code``."""

    class Failing:
        def __init__(self, f: object) -> None:
            self.f = f

        def __enter__(self) -> Failing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()  # type: ignore[attr-defined]

        def fileno(self) -> int:
            return int(self.f.fileno())  # type: ignore[attr-defined]

        def write(self, _data: bytes) -> int:
            raise OSError(code, os.strerror(code))

    def fdopen(fd: int, mode: str) -> Failing:
        return Failing(real(fd, mode))  # type: ignore[operator]

    return fdopen


def test_dangling_symlink_at_the_output_name_is_skipped(tmp_path: Path) -> None:
    src = tmp_path / "p.jpg"
    (tmp_path / "p_protected.jpg").symlink_to(tmp_path / "gone.jpg")
    free = output_path_for(src, tmp_path)
    assert free.name == "p_protected-2.jpg"
    with pytest.raises(FileExistsError):  # the link is never replaced
        atomic_write_bytes(tmp_path / "p_protected.jpg", b"x")
    atomic_write_bytes(free, b"x")
    assert (tmp_path / "p_protected.jpg").is_symlink() and free.read_bytes() == b"x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_file_says_permission_denied(tmp_path: Path) -> None:
    p = tmp_path / "locked.jpg"
    Image.fromarray(_gradient()).save(p)
    p.chmod(0)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            read_photo(p)
    finally:
        p.chmod(0o600)


def test_read_error_of_the_drive_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An I/O error while reading is said as such, not as a corrupt file."""
    p = tmp_path / "a.jpg"
    Image.fromarray(_gradient()).save(p)

    def fail(*_args: object, **_kw: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(Image, "open", fail)
    with pytest.raises(ImageError, match=r"a\.jpg: cannot read the file: input/output error"):
        read_photo(p)


HEIC = Path(__file__).parent / "fixtures" / "gradient.heic"
"""A real 64 × 48 HEIC photo, made by ``heif-enc -q 60`` (Debian's libheif-examples 1.15)."""


def test_heic_without_the_plugin_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pareidolia.io as pio

    if "pillow_heif" in sys.modules:  # the plugin is installed: read it with the plugin off
        monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if "HEIF" not in k})
        monkeypatch.setattr(Image, "ID", [k for k in Image.ID if "HEIF" not in k])
    for name in ("photo.heic", "photo.jpg"):  # named for what it is, or not
        copy = tmp_path / name
        copy.write_bytes(HEIC.read_bytes())
        with pytest.raises(ImageError) as caught:
            read_photo(copy)
        assert caught.value.problem == pio.HEIF_HINT
        assert "pip install 'pareidolia[heif]'" in str(caught.value)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_are_refused_with_one_clear_line(tmp_path: Path, fmt: str) -> None:
    frames = [Image.fromarray(_gradient()), Image.fromarray(255 - _gradient())]
    p = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(p, format=fmt, save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(ImageError, match=rf"animated {fmt} \(2 frames\); only still photos"):
        read_photo(p)
    still = tmp_path / f"still.{fmt.lower()}"
    frames[0].save(still, format=fmt)
    assert read_photo(still).size == (64, 48)
