"""Fixtures shared by every test layer: real images, real artifacts, no mocks of our code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lookalike.core.settings import Settings
from lookalike.registry import Registry

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "catalog"
SHARED_DATA = Path(os.environ.get("LOOKALIKE_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Every server a test starts (in process or as a subprocess) comes from one address, so
    the per-client limits are lifted for the session; the tests of the limits set their own."""
    os.environ.setdefault("LOOKALIKE_EXTENSION__ANONYMOUS_PER_MINUTE", "1000000")
    os.environ.setdefault("LOOKALIKE_EXTENSION__RATE_PER_MINUTE", "1000000")
    os.environ.setdefault("LOOKALIKE_EXTENSION__EVENTS_PER_MINUTE", "1000000")


@pytest.fixture(scope="session")
def demo_catalog() -> Path:
    """The bundled demo catalog: ``items.csv`` and ``images/``."""
    return DEMO


@pytest.fixture(scope="session")
def demo_images(demo_catalog: Path) -> list[Path]:
    return sorted((demo_catalog / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: these tests need ../shared/data")
    return SHARED_DATA


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


@pytest.fixture(scope="session")
def built_models(tmp_path_factory: pytest.TempPathFactory, demo_images: list[Path]) -> Path:
    """A models/ folder holding the real default model, built once per test session.

    Set LOOKALIKE_TEST_MODELS to an existing models/ folder to reuse a build (CI does, after
    building it once with `lookalike models build-default`).
    """
    reuse = os.environ.get("LOOKALIKE_TEST_MODELS")
    if reuse and Path(reuse, "effnet_lite0", "aliases.json").is_file():
        return Path(reuse)
    from lookalike.embed.build import build_default
    from lookalike.lifecycle import promote
    from lookalike.search.kind import SearchKind

    home = tmp_path_factory.mktemp("models_home")
    root = home / "models"
    # The ImageNet backbone alone (`build-default --plain`): the base that training, the gates
    # and the serving tests build on. The shipped garment-aware default: `garment_models`.
    ref = build_default(Registry(root, "model"), calibration_images=demo_images)
    outcome = promote(SearchKind(Settings(home=home)), "model", ref)  # the one promote path
    assert outcome.promoted, outcome.failed_checks
    return root


@pytest.fixture(scope="session")
def garment_models(tmp_path_factory: pytest.TempPathFactory, demo_images: list[Path]) -> Path:
    """A models/ folder holding the shipped default (`lookalike models build-default`):
    garment detector + head fitted on the demo catalog's categories, promoted."""
    from lookalike.embed.build import build_default
    from lookalike.embed.garment_default import KIND_CLASSIFIER_FILE, read_labelled
    from lookalike.lifecycle import promote
    from lookalike.search.kind import SearchKind

    home = tmp_path_factory.mktemp("garment_home")
    root = home / "models"
    ref = build_default(
        Registry(root, "model"),
        calibration_images=demo_images,
        labelled=read_labelled(DEMO / "items.csv"),
        kind_classifier=DEMO / KIND_CLASSIFIER_FILE,  # as `build-default` finds it
    )
    outcome = promote(SearchKind(Settings(home=home)), "model", ref)
    assert outcome.promoted, outcome.failed_checks
    return root


@pytest.fixture()
def home_with_model(tmp_path: Path, built_models: Path) -> Path:
    """A fresh LOOKALIKE_HOME whose models/ is a copy of the built default model."""
    import shutil

    shutil.copytree(built_models, tmp_path / "models")
    return tmp_path


def _indexed_demo_home(home: Path, models: Path) -> Path:
    """``home`` with a copy of ``models``, the demo catalog imported and indexed, promoted."""
    import shutil

    from lookalike.catalog import CatalogStore
    from lookalike.embed import load_embedder
    from lookalike.lifecycle import promote
    from lookalike.search import build_index
    from lookalike.search.kind import SearchKind

    shutil.copytree(models, home / "models")
    settings = Settings(home=home)
    settings.var_dir.mkdir(parents=True)
    store = CatalogStore(settings.db_url, settings.media_dir)
    store.create_schema()
    report = store.import_file(DEMO / "items.csv", DEMO)
    assert report.ok, report.rejected
    embedder = load_embedder(Registry(settings.models_dir, "model"), "effnet_lite0:production")
    indexes = Registry(settings.index_dir, "index")
    outcome = promote(SearchKind(settings), "index", build_index(store, embedder, indexes))
    assert outcome.promoted, outcome.failed_checks
    store.close()
    return home


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory, built_models: Path) -> Path:
    """A LOOKALIKE_HOME with the default model, the demo catalog imported and indexed.

    Built once per session through the same library calls the CLI makes. Tests that change it
    must copy it first (see ``fresh_demo_home``).
    """
    return _indexed_demo_home(tmp_path_factory.mktemp("demo_home"), built_models)


@pytest.fixture(scope="session")
def garment_demo_home(tmp_path_factory: pytest.TempPathFactory, garment_models: Path) -> Path:
    """``demo_home`` with the shipped garment-aware default (what `make demo` serves)."""
    return _indexed_demo_home(tmp_path_factory.mktemp("garment_demo_home"), garment_models)


@pytest.fixture()
def fresh_demo_home(tmp_path: Path, demo_home: Path) -> Path:
    """A private copy of ``demo_home`` that a test may change."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    return home
