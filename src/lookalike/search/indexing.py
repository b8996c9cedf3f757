"""Build, update and load the catalog's vector index as a versioned registry artifact.

A build reads catalog images, embeds them with one embedder and writes a new immutable index
version whose manifest names that embedder; an update copies production and adds/removes only
the images that changed in the catalog. Neither touches the live index: the new version becomes
visible only when promoted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lookalike.catalog import CatalogImage, CatalogStore
from lookalike.core.errors import ConfigError, LookalikeError
from lookalike.core.images import load_image_file
from lookalike.core.progress import Progress
from lookalike.embed import Embedder
from lookalike.index import FaissIndex, create_index, load_index, suggest_factory
from lookalike.registry import Ref, Registry

__all__ = ["LoadedIndex", "build_index", "check_pair", "load_production_index", "update_index"]

log = logging.getLogger("lookalike.search")
IDS_FILE = "image_ids.npy"


@dataclass(frozen=True)
class LoadedIndex:
    ref: Ref
    index: FaissIndex
    embedder: str
    manifest: dict


def _batches(items: list[CatalogImage], size: int) -> Iterator[list[CatalogImage]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def embed_catalog_images(
    catalog: CatalogStore,
    embedder: Embedder,
    images: list[CatalogImage],
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embed catalog images; return (vectors, image ids, problems). Unreadable ones are skipped."""
    vectors: list[np.ndarray] = []
    ids: list[int] = []
    problems: list[str] = []
    done = 0

    def load(img: CatalogImage):  # decode in threads: Pillow releases the GIL
        try:
            return img, load_image_file(catalog.media_path(img)), None
        except (LookalikeError, OSError) as exc:
            return img, None, f"image {img.image_id} of item {img.item_id}: {exc}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        for batch in _batches(images, batch_size):
            loaded = list(pool.map(load, batch))
            ok = [(img, pil) for img, pil, err in loaded if pil is not None]
            problems += [err for _, pil, err in loaded if err is not None]
            if ok:
                vectors.append(embedder.embed([pil for _, pil in ok]))
                ids += [img.image_id for img, _ in ok]
            done += len(batch)
            if progress:
                progress("embedding", done, len(images))
    dim = embedder.info.dim
    mat = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    return mat.astype(np.float32), np.asarray(ids, dtype=np.int64), problems


def _write_index(
    registry: Registry,
    name: str,
    index: FaissIndex,
    ids: np.ndarray,
    manifest: dict,
) -> Ref:
    with registry.create(name, manifest) as w:
        index.save(w.path)
        np.save(w.path / IDS_FILE, np.sort(ids))
    return w.ref


def build_index(
    catalog: CatalogStore,
    embedder: Embedder,
    registry: Registry,
    *,
    name: str = "catalog",
    factory: str | None = None,
    progress: Progress | None = None,
) -> Ref:
    """Embed every catalog image and write a new index version (not promoted)."""
    started = time.perf_counter()
    revision = catalog.revision()
    images = list(catalog.iter_images())
    vectors, ids, problems = embed_catalog_images(catalog, embedder, images, progress=progress)
    factory = factory or suggest_factory(len(ids), embedder.info.dim)
    index = create_index(factory, embedder.info.dim)
    if not index.is_trained:
        index.train(vectors)
    if len(ids):
        index.add(vectors, ids)
    manifest = {
        "embedder": embedder.info.ref,
        "dim": embedder.info.dim,
        "factory": factory,
        "count": int(len(ids)),
        "items": len({img.item_id for img in images}),
        "catalog_revision": revision,
        "skipped_images": problems[:100],
        "build_seconds": round(time.perf_counter() - started, 2),
        "built_by": "build",
    }
    ref = _write_index(registry, name, index, ids, manifest)
    log.info(
        "built index %s: %d vectors with %s in %.1fs",
        ref,
        len(ids),
        embedder.info.ref,
        manifest["build_seconds"],
    )
    return ref


def update_index(
    catalog: CatalogStore,
    embedder: Embedder,
    registry: Registry,
    *,
    name: str = "catalog",
    base: str = "production",
    progress: Progress | None = None,
) -> tuple[Ref, int, int]:
    """Copy the ``base`` index and apply catalog changes only: returns (ref, added, removed)."""
    loaded = load_registry_index(registry, Ref(name, base))
    check_pair(loaded, embedder.info.ref)
    started = time.perf_counter()
    revision = catalog.revision()
    old_ids = np.load(registry.path(loaded.ref) / IDS_FILE)
    images = list(catalog.iter_images())
    current = np.asarray([img.image_id for img in images], dtype=np.int64)
    gone = np.setdiff1d(old_ids, current)
    new_set = set(np.setdiff1d(current, old_ids).tolist())
    fresh = [img for img in images if img.image_id in new_set]
    vectors, ids, problems = embed_catalog_images(catalog, embedder, fresh, progress=progress)
    index = loaded.index
    if len(gone):
        index.remove(gone)
    if len(ids):
        index.add(vectors, ids)
    all_ids = np.union1d(np.setdiff1d(old_ids, gone), ids)
    manifest = {
        **{k: loaded.manifest[k] for k in ("embedder", "dim", "factory")},
        "count": int(len(all_ids)),
        "items": len({img.item_id for img in images}),
        "catalog_revision": revision,
        "skipped_images": problems[:100],
        "build_seconds": round(time.perf_counter() - started, 2),
        "built_by": f"update of {loaded.ref}",
        "added": int(len(ids)),
        "removed": int(len(gone)),
    }
    ref = _write_index(registry, name, index, all_ids, manifest)
    return ref, int(len(ids)), int(len(gone))


def load_registry_index(registry: Registry, ref: Ref | str) -> LoadedIndex:
    ref = registry.resolve(ref)
    problems = registry.verify(ref)
    if problems:
        raise ConfigError(f"index {ref} is damaged: {'; '.join(problems)}")
    manifest = registry.manifest(ref)
    index = load_index(registry.path(ref))
    return LoadedIndex(ref, index, manifest["embedder"], manifest)


def check_pair(loaded: LoadedIndex, embedder_ref: str) -> None:
    """Refuse an index built with another embedder than the one serving queries."""
    if loaded.embedder != embedder_ref:
        raise ConfigError(
            f"index {loaded.ref} was built with embedder {loaded.embedder}, the server has "
            f"{embedder_ref} — run `lookalike index build` (then `lookalike index promote`)"
        )


def load_production_index(
    registry: Registry,
    name: str,
    embedder_ref: str,
    aliases: Iterable[str] = ("production", "previous"),
) -> tuple[LoadedIndex, list[str]]:
    """Load the first alias that loads and matches the embedder; return it and why others failed.

    Raises ConfigError naming every failure when none can serve.
    """
    failures: list[str] = []
    for alias in aliases:
        try:
            loaded = load_registry_index(registry, Ref(name, alias))
            check_pair(loaded, embedder_ref)
            return loaded, failures
        except LookalikeError as exc:
            failures.append(f"{name}:{alias}: {exc.message}")
        except Exception as exc:  # a damaged faiss file raises RuntimeError from C++
            failures.append(f"{name}:{alias}: could not load ({exc})")
    raise ConfigError("no index can serve: " + " | ".join(failures))
