"""The contract every model kind keeps (the way timm tests every registered model).

For each kind that ``default_kinds`` registers: its production release loads into a generation
that says what it serves; every role's checks run and record exactly the declared check names;
metric gates have a direction; a good candidate is promoted through the one promote path and
reaches the serving slot by reload; a bad one is refused and production does not move; rollback
brings the old release back; and every fallback chain answers when its primary step fails.

A kind needs two factories here, ``GOOD`` and ``BAD`` (real artifacts, built like any other):
a new kind that does not add them fails ``test_every_kind_has_candidate_factories``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from bad_models import copy_model, register_onnx_model
from fastapi.testclient import TestClient
from live import api_key
from test_fit_serving import SHOPPER, synthetic_rentals
from test_fit_serving import bad_version as fit_bad_version
from test_fit_serving import good_version as fit_good_version
from test_forecast_serving import bad_forecast, good_forecast, synthetic_forecast_rentals
from test_prefilter_kind import bad_prefilter, good_prefilter
from test_price_serving import DRESS, bad_version, good_version, synthetic_csv
from test_recs_serving import bad_recs_version, good_recs_version

from lookalike.catalog import CatalogStore
from lookalike.core.settings import Settings
from lookalike.lifecycle import (
    Kind,
    LoadContext,
    ProductSlot,
    SingleModelKind,
    StepPools,
    promote,
    rollback,
)
from lookalike.registry import Ref, Registry
from lookalike.serve.app import create_app
from lookalike.serve.products import default_kinds

Factory = Callable[[Kind, str], Ref]


def _search_good(kind: Kind, role: str) -> Ref:
    registry = kind.registry(role)
    if role == "model":
        return copy_model(registry)
    production = f"{kind.artifact_name(role)}:production"
    return copy_model(registry, production, note="contract copy")


def _search_bad(kind: Kind, role: str) -> Ref:
    registry = kind.registry(role)
    if role == "model":
        return register_onnx_model(registry, "nan")
    good = registry.resolve(Ref(kind.artifact_name(role), "production"))
    with registry.create(good.name, registry.manifest(good) | {"note": "damaged"}) as w:
        for p in registry.path(good).iterdir():
            if p.name != "manifest.json":
                shutil.copy(p, w.path / p.name)
    victim = next(p for p in sorted(w.path.iterdir()) if p.name != "manifest.json")
    victim.write_bytes(b"\0" * 64)  # after the checksums were taken: checksums must fail
    return w.ref


def _price_data(kind: Kind) -> Path:
    path = kind.settings.home / "price-listings.csv"
    return path if path.is_file() else synthetic_csv(path)


def _price_good(kind: Kind, role: str) -> Ref:
    return good_version(kind.registry(role), _price_data(kind))


def _price_bad(kind: Kind, role: str) -> Ref:
    return bad_version(kind.registry(role), _price_data(kind))  # MAPE 3x worse: metric fails


def _price_production(kind: Kind) -> None:
    # the demo home has no price model: put a first one in production the one way there is
    assert promote(kind, "model", _price_good(kind, "model")).promoted


def _fit_data(kind: Kind) -> Path:
    path = kind.settings.home / "fit-rentals.csv"
    return path if path.is_file() else synthetic_rentals(path)


def _fit_good(kind: Kind, role: str) -> Ref:
    return fit_good_version(kind.registry(role), _fit_data(kind))


def _fit_bad(kind: Kind, role: str) -> Ref:
    return fit_bad_version(kind.registry(role), _fit_data(kind))  # always "large": metric fails


def _fit_production(kind: Kind) -> None:
    assert promote(kind, "model", _fit_good(kind, "model")).promoted


def _recs_production(kind: Kind) -> None:
    assert promote(kind, "model", good_recs_version(kind.registry("model"))).promoted


GOOD: dict[str, Factory] = {"search": _search_good, "price": _price_good, "fit": _fit_good}
BAD: dict[str, Factory] = {"search": _search_bad, "price": _price_bad, "fit": _fit_bad}
GOOD["recs"] = lambda kind, role: good_recs_version(kind.registry(role))
BAD["recs"] = lambda kind, role: bad_recs_version(kind.registry(role))  # NDCG@10 drops
# Kinds whose production the demo home lacks: how a contract run gets a first one.
PRODUCTION: dict[str, Callable[[Kind], None]] = {
    "price": _price_production,
    "fit": _fit_production,
    "recs": _recs_production,
}


def _forecast_data(kind: Kind) -> Path:
    path = kind.settings.home / "forecast-rentals.csv"
    return path if path.is_file() else synthetic_forecast_rentals(path)


GOOD["forecast"] = lambda kind, role: good_forecast(kind.registry(role), _forecast_data(kind))
BAD["forecast"] = lambda kind, role: bad_forecast(kind.registry(role), _forecast_data(kind))


def _forecast_production(kind: Kind) -> None:
    assert promote(kind, "model", GOOD["forecast"](kind, "model")).promoted


PRODUCTION["forecast"] = _forecast_production
GOOD["prefilter"] = lambda kind, role: good_prefilter(kind.registry(role))
BAD["prefilter"] = lambda kind, role: bad_prefilter(kind.registry(role))  # weights reversed


def _prefilter_production(kind: Kind) -> None:
    assert promote(kind, "model", good_prefilter(kind.registry("model"))).promoted


PRODUCTION["prefilter"] = _prefilter_production


def _kinds(home: Path) -> list[Kind]:
    return list(default_kinds(Settings(home=home)))


@pytest.fixture()
def home(fresh_demo_home: Path) -> Path:
    return fresh_demo_home


def _slot(kind: Kind, catalog: CatalogStore) -> ProductSlot:
    pools = StepPools(4)
    context = LoadContext(kind.settings, pools, shared={"catalog": catalog})
    return ProductSlot(kind, context).load()


def test_every_kind_has_candidate_factories(home: Path) -> None:
    products = {kind.product for kind in _kinds(home)}
    assert products and products <= set(GOOD) and products <= set(BAD)


@pytest.mark.parametrize("product", sorted(GOOD))
def test_kind_contract(home: Path, product: str) -> None:
    settings = Settings(home=home)
    kind = default_kinds(settings).for_product(product)
    if product in PRODUCTION:
        PRODUCTION[product](kind)
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    try:
        _contract(kind, catalog)
    finally:
        catalog.close()


def _contract(kind: Kind, catalog: CatalogStore) -> None:
    # -- load: production release → a generation that says what it serves
    release = kind.release("production")
    assert set(release.members) == set(kind.roles)
    slot = _slot(kind, catalog)
    assert slot.status == "ok", slot.problems
    generation = slot.generation
    assert generation is not None
    assert generation.versions == {r: str(ref) for r, ref in release.members.items()}
    health = slot.health()
    assert health["release"]["members"] == generation.versions and health["served_by"]

    for role in kind.roles:
        # -- checks: exactly the declared names, recorded in the manifest
        ref = release.members[role]
        report = kind.check(role, ref)
        assert [r.name for r in report.results] == list(kind.check_names[role])
        assert report.passed, [(r.name, r.message) for r in report.failed]
        recorded = kind.registry(role).manifest(ref)["checks"]
        assert recorded["passed"] is True and set(recorded["results"]) == set(
            kind.check_names[role]
        )
        for gate in kind.metric_gates(role):
            assert gate.direction in ("higher", "lower") and gate.tolerance >= 0
            figures = report.get(gate.check)
            assert figures is not None and figures.figures["direction"] == gate.direction

        # -- a bad candidate is refused and production does not move
        registry = kind.registry(role)
        name = kind.artifact_name(role)
        before = registry.aliases(name)["production"]
        refused = promote(kind, role, BAD[kind.product](kind, role))
        assert refused.status == "refused" and refused.failed_checks
        assert registry.aliases(name)["production"] == before

        # -- an artifact that does not load stops its checks: the rest say so, none is skipped
        if isinstance(kind, SingleModelKind):
            broken = GOOD[kind.product](kind, role)
            for path in registry.path(broken).rglob("*"):
                if path.is_file() and path.name != "manifest.json":
                    path.write_bytes(b"not an artifact")
            report = kind.check(role, broken)
            assert [r.name for r in report.results] == list(kind.check_names[role])
            assert not report.get("load").passed, report.get("load").message
            later = report.results[[r.name for r in report.results].index("load") + 1 :]
            assert later and all(
                not r.passed and r.message.startswith("not run:") for r in later
            ), [(r.name, r.message) for r in later]
            assert registry.manifest(broken)["checks"]["passed"] is False

    # -- a good candidate of the release's anchor roles goes through the one promote path
    for role in kind.roles:  # search: model, then the index built with it (the release moves)
        good = GOOD[kind.product](kind, role)
        if role == "index" and kind.product == "search":
            # the copy must name the model just promoted: an index built with it
            registry = kind.registry(role)
            model = kind.registry("model").resolve(Ref(kind.artifact_name("model"), "production"))
            good = _rename_embedder(registry, good, str(model))
        outcome = promote(kind, role, good)
        assert outcome.status == "promoted", outcome.failed_checks
        assert kind.registry(role).aliases(good.name)["production"] == good.version
    # -- reload: the slot follows the registry
    assert slot.reload_if_changed()
    assert slot.generation is not None and slot.generation.release.describe() != release.describe()
    assert slot.status == "ok", slot.problems
    # -- /health (and /metrics' lookalike_model_metric) say what the new release was measured at
    held = {(m["artifact"], m["metric"]): m for m in slot.health()["held_to"]}
    for role, ref in slot.generation.release.members.items():
        results = kind.registry(role).manifest(ref)["checks"]["results"]
        for gate in kind.metric_gates(role):
            m = held[(str(ref), gate.metric)]
            assert m["direction"] == gate.direction
            assert m["value"] == results[gate.check]["figures"]["candidate"]

    # -- rollback: the old release serves again after reload
    rollback(kind, kind.roles[0])
    assert slot.reload_if_changed()
    assert slot.generation is not None
    assert slot.generation.versions == {r: str(ref) for r, ref in release.members.items()}

    # -- fallback: every chain answers with its next step when the primary fails
    for stage, chain in slot.generation.fallback_chains().items():
        if not any(step.engine is not None for step in chain.steps[1:]):
            assert all(step.why for step in chain.steps[1:] if step.engine is None), stage
            continue
        primary = chain.primary

        def run(engine: object, primary: object = primary) -> str:
            if engine is primary:
                raise RuntimeError("primary broken on purpose")
            return "answered"

        answer, engine, reasons = chain.run(run)
        assert answer == "answered" and engine is not primary
        assert reasons and "primary broken on purpose" in reasons[0]

    # -- the artifacts' folder gone under a serving slot (a volume not mounted, a folder
    # deleted): it keeps serving what it loaded, degraded and saying so; back: serving again
    serving = slot.generation
    folders = [kind.registry(role).root / kind.artifact_name(role) for role in kind.roles]
    for folder in folders:
        folder.rename(folder.with_name(folder.name + ".away"))
    try:
        assert not slot.reload_if_changed()
        assert slot.generation is serving and slot.status == "degraded", slot.problems
        assert any("kept serving" in p for p in slot.problems), slot.problems
    finally:
        for folder in folders:
            folder.with_name(folder.name + ".away").rename(folder)
    assert slot.reload_if_changed() and slot.status == "ok", slot.problems


def _rename_embedder(registry: Registry, ref: Ref, embedder: str) -> Ref:
    return copy_model(registry, str(ref), embedder=embedder)


def test_a_product_never_built_answers_503_naming_its_command(tmp_path: Path) -> None:
    """An optional product with nothing promoted: its route says why and which command fixes it."""
    headers = {"X-API-Key": api_key(tmp_path)}
    asks = {
        "price suggestion": ("post", "/v1/price", DRESS, "lookalike price build"),
        "fit prediction": ("post", "/v1/fit", {**SHOPPER, "item_id": "1"}, "lookalike fit build"),
        "demand forecasting": ("get", "/v1/forecast/items/1000", None, "lookalike forecast build"),
        "recommendation": ("get", "/v1/users/shopper-1/home", None, "lookalike recs build"),
    }
    with TestClient(create_app(Settings(home=tmp_path))) as client:
        for what, (method, path, body, fix) in asks.items():
            r = client.request(method, path, json=body, headers=headers)
            message = r.json()["error"]["message"]
            assert r.status_code == 503, (path, r.text)
            assert message == f"{what} is not ready: nothing is promoted yet — run `{fix}`", path
        products = client.get("/health").json()["products"]
        for product in ("price", "fit", "forecast", "recs"):  # optional: not built, not down
            assert products[product]["built"] is False and products[product]["status"] == "ok"
