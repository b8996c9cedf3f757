"""On-disk cache of backbone features of image crops, for training and offline evaluation.

Embedding 15,000 photos with the frozen CNN takes minutes on two cores; training a head on
those features takes seconds. So features are stored once per (backbone, crop) and reused by
every later experiment. Layout::

    CACHE/<backbone key>/<crop key>/keys.txt    one line per row: path|bytes|mtime_ns
    CACHE/<backbone key>/<crop key>/feats.npy   (rows, dim) float32

The backbone key is the sha256 prefix of the ONNX file that served (from the manifest), so a
rebuilt model never reads another model's features. A file that changed (size or mtime) is a new
key and is embedded again. Writers replace both files atomically; one writer at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.core.images import missing_photo, read_named_photo
from lookalike.core.progress import Progress
from lookalike.embed.regions import FIXED_REGIONS, Box, colour_histogram, crop_box

__all__ = ["CropSpec", "FeatureCache", "backbone_key"]


class CropSpec:
    """Which part of each photo to embed: a named fixed region or a box, optionally mirrored.

    ``boxes`` (one per path) overrides ``box`` when each photo has its own region (localiser).
    """

    def __init__(self, region: str = "whole", *, flip: bool = False, box: Box | None = None):
        self.region = region
        self.flip = flip
        self.box = box if box is not None else FIXED_REGIONS.get(region)
        if self.box is None:
            raise ValueError(f"unknown region {region!r} and no box given")

    @property
    def key(self) -> str:
        box = ",".join(f"{v:.3f}" for v in self.box)  # type: ignore[union-attr]
        return f"{self.region}-{box}" + ("-flip" if self.flip else "")

    def apply(self, image: Image.Image) -> Image.Image:
        return crop_box(image, self.box, flip=self.flip)  # type: ignore[arg-type]


def backbone_key(manifest: dict, variant: str) -> str:
    """A short key naming the exact backbone file (its sha256 prefix).

    A manifest's ``feature_keys`` (written when a version's ONNX file changed but its features
    did not, e.g. a feature-map output was added) takes precedence.
    """
    known = manifest.get("feature_keys", {}).get(variant)
    if known:
        return str(known)
    rel = manifest.get("variants", {}).get(variant)
    sha = manifest.get("files", {}).get(rel, {}).get("sha256") if rel else None
    base = sha or hashlib.sha256(repr(sorted(manifest.items())).encode()).hexdigest()
    return f"{manifest.get('arch', 'model')}-{variant}-{base[:16]}"


def _file_key(path: Path) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise missing_photo(path) from None
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


class FeatureCache:
    """Features of ``(path, crop)`` for one backbone; see the module docstring for the layout.

    ``run`` maps a list of PIL images to ``(n, dim)`` float32 rows (the backbone embedder's
    ``embed``). Kind ``"cnn"`` caches ``run``'s output, kind ``"colour"`` a colour histogram.
    """

    def __init__(
        self,
        root: Path,
        key: str,
        run: Callable[[list[Image.Image]], np.ndarray],
        *,
        batch_size: int = 64,
    ) -> None:
        self.root = Path(root) / key
        self.run = run
        self.batch_size = batch_size

    def _load(self, folder: Path) -> tuple[list[str], np.ndarray | None]:
        keys_file, feats_file = folder / "keys.txt", folder / "feats.npy"
        if not (keys_file.is_file() and feats_file.is_file()):
            return [], None
        keys = keys_file.read_text(encoding="utf-8").splitlines()
        feats = np.load(feats_file)
        if len(keys) != len(feats):  # a torn write from an older version: start again
            return [], None
        return keys, feats

    def _save(self, folder: Path, keys: list[str], feats: np.ndarray) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp_feats, tmp_keys = folder / ".feats.npy.tmp", folder / ".keys.txt.tmp"
        with open(tmp_feats, "wb") as f:
            np.save(f, feats)
        tmp_keys.write_text("\n".join(keys) + "\n", encoding="utf-8")
        os.replace(tmp_feats, folder / "feats.npy")
        os.replace(tmp_keys, folder / "keys.txt")

    def features(
        self,
        paths: Sequence[Path],
        crop: CropSpec | None = None,
        *,
        kind: str = "cnn",
        progress: Progress | None = None,
    ) -> np.ndarray:
        """``(len(paths), dim)`` features of ``crop`` of each path, computing only missing rows."""
        crop = crop or CropSpec()
        folder = self.root / f"{kind}-{crop.key}"
        keys, feats = self._load(folder)
        row = {k: i for i, k in enumerate(keys)}
        wanted = [_file_key(Path(p)) for p in paths]
        todo = sorted({k for k in wanted if k not in row})
        if todo:
            by_key = {_file_key(Path(p)): Path(p) for p in paths}
            new = self._compute([by_key[k] for k in todo], crop, kind, progress)
            feats = new if feats is None else np.concatenate([feats, new])
            keys = keys + todo
            row = {k: i for i, k in enumerate(keys)}
            self._save(folder, keys, feats)
        assert feats is not None or not wanted
        if not wanted:
            return np.zeros((0, 0 if feats is None else feats.shape[1]), np.float32)
        return feats[[row[k] for k in wanted]]  # type: ignore[index]

    def _compute(
        self, paths: list[Path], crop: CropSpec, kind: str, progress: Progress | None
    ) -> np.ndarray:
        def load(p: Path) -> Image.Image:
            return crop.apply(read_named_photo(p))

        out: list[np.ndarray] = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(paths), self.batch_size):
                images = list(pool.map(load, paths[start : start + self.batch_size]))
                if kind == "cnn":
                    out.append(np.asarray(self.run(images), dtype=np.float32))
                elif kind == "colour":
                    out.append(np.stack([colour_histogram(im) for im in images]))
                else:
                    raise ValueError(f"unknown feature kind {kind!r}")
                if progress:
                    progress("features", min(start + self.batch_size, len(paths)), len(paths))
        return np.concatenate(out).astype(np.float32)
