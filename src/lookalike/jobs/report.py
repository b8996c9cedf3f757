"""``lookalike report``: one self-contained HTML page a person reads on Monday morning.

It gathers what the project already records — version manifests with their check figures,
refresh reports under ``var/refresh/``, benchmark JSONs under ``artifacts/``, feedback events —
and the edge cases worth a human's eye, computed from the catalog and the production index.
Plots are matplotlib PNGs embedded as base64, so the file can be mailed or archived alone.
Figures that nothing measures yet are listed as "not yet measured", never invented.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from lookalike.catalog import CatalogStore
from lookalike.catalog.rental_store import RentalStore
from lookalike.catalog.schema import images as images_table
from lookalike.catalog.schema import items as items_table
from lookalike.core.db import get_engine, translate_errors
from lookalike.core.errors import ConfigError, LookalikeError
from lookalike.core.settings import Settings
from lookalike.core.textfiles import write_output
from lookalike.jobs.events import EventStore
from lookalike.lifecycle import KindRegistry, release_metrics
from lookalike.lifecycle.checks import recorded_metrics
from lookalike.registry import Ref, Registry
from lookalike.search.indexing import load_registry_index

__all__ = ["ReportData", "collect_report", "lonely_items", "render_html", "write_report"]

FEW_ITEMS = 5  # a category with fewer items than this gives search little to show
TOP_K = 10
FEW_FIT_REVIEWS = 100  # a size or body type with fewer reviews gives the fit model little to learn


@dataclass
class ReportData:
    generated_at: str
    home: str
    versions: list[dict[str, Any]] = field(default_factory=list)  # one row per artifact version
    # one row per product the serving layer knows: its metrics, or the command that builds it
    products: list[dict[str, Any]] = field(default_factory=list)
    fit_data: dict[str, Any] | None = None  # thin sizes / body types, reviews per user
    fit_note: str = ""
    latency: list[dict[str, Any]] = field(default_factory=list)
    refreshes: list[dict[str, Any]] = field(default_factory=list)
    ctr: dict[str, Any] | None = None
    categories: list[tuple[str, int]] = field(default_factory=list)
    items_without_images: list[str] = field(default_factory=list)
    lonely: list[dict[str, Any]] = field(default_factory=list)
    lonely_note: str = ""
    notes: list[str] = field(default_factory=list)


# -- gathering --------------------------------------------------------------------------------
def _versions(registry: Registry, kinds: KindRegistry) -> list[dict[str, Any]]:
    """One row per version in ``registry``, with the product that owns its artifact."""
    rows = []
    for name in registry.names():
        aliases = registry.aliases(name)
        try:
            product = kinds.owner(registry.kind, name)[0].product
        except LookalikeError:  # an artifact no product serves (e.g. a trained localiser)
            product = "-"
        for version in registry.versions(name):
            try:
                m = registry.manifest(Ref(name, version))
            except LookalikeError:
                continue
            checks = m.get("checks") or {}
            rows.append(
                {
                    "kind": registry.kind,
                    "ref": f"{name}:{version}",
                    "product": product,
                    "aliases": ",".join(a for a, v in aliases.items() if v == version),
                    "created_at": m.get("created_at", ""),
                    "metrics": recorded_metrics(m),
                    "checks": None if not checks else bool(checks.get("passed")),
                    "latency": ((checks.get("results") or {}).get("latency") or {}).get(
                        "figures", {}
                    ),
                }
            )
    return rows


def _products(kinds: KindRegistry, versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each product the serving layer knows: what its production release (the one a server
    loads, as /health's ``held_to`` says) was measured at, or how to build it."""
    out = []
    for k in kinds:
        try:
            production = release_metrics(k, k.release("production"))
        except LookalikeError:  # nothing promoted, or aliases that cannot be read
            production = []
        out.append(
            {
                "product": k.product,
                "versions": sum(v["product"] == k.product for v in versions),
                "production": production,
                "build": getattr(k, "build_fix", None) or "lookalike demo --no-serve",
            }
        )
    return out


def _fit_data(settings: Settings) -> dict[str, Any]:
    """Sizes and body types with few reviews, and how many reviews each user has."""
    store = RentalStore.for_settings(settings)  # the process's shared engine: nothing to close
    total = store.count_rows()
    if not total:
        return {"reviews": 0}
    thin = [
        {"by": column, "value": value or "(missing)", "reviews": n}
        for column in ("size", "body_type")
        for value, n in store.group_counts(column)
        if n < FEW_FIT_REVIEWS
    ]
    per_user = store.reviews_per_user()
    users = sum(per_user.values())
    buckets = {
        "1": sum(u for n, u in per_user.items() if n == 1),
        "2-4": sum(u for n, u in per_user.items() if 2 <= n <= 4),
        "5+": sum(u for n, u in per_user.items() if n >= 5),
    }
    return {"reviews": total, "users": users, "thin": thin, "users_by_reviews": buckets}


def _benchmarks(roots: list[Path]) -> list[dict[str, Any]]:
    """Rows of (source, figure, median, p95) from benchmark JSONs that carry percentiles."""
    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.glob("*.json")):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                doc = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(doc, dict):
                continue
            for key, value in doc.items():
                if isinstance(value, dict) and "median" in value and "p95" in value:
                    rows.append(
                        {
                            "source": path.name,
                            "figure": key,
                            "median": value["median"],
                            "p95": value["p95"],
                        }
                    )
    return rows


def _refreshes(folder: Path, limit: int = 50) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("*.json"))[-limit:]:
        try:
            doc = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        embedder = doc.get("embedder") or {}
        out.append(
            {
                "started_at": doc.get("started_at"),
                "status": doc.get("status"),
                "summary": doc.get("summary", ""),
                "seconds": doc.get("seconds"),
                "served_by": embedder.get("served_by"),
                "fell_back": bool(embedder.get("fell_back")),
            }
        )
    return out


def _items_without_images(url: str) -> list[str]:
    query = (
        sa.select(items_table.c.item_id)
        .outerjoin(images_table, images_table.c.item_id == items_table.c.item_id)
        .where(images_table.c.image_id.is_(None))
        .order_by(items_table.c.item_id)
    )
    # The process's one engine for this URL (core.db), the same the catalog store reads with.
    with translate_errors("the catalog database"), get_engine(url).connect() as conn:
        return list(conn.scalars(query))


def lonely_items(settings: Settings, k: int = TOP_K) -> list[dict[str, Any]]:
    """Available items whose ``k`` nearest other items (production index) are all unavailable.

    A shopper who opens such an item sees "similar" results that cannot be rented.
    """
    indexes = Registry(settings.index_dir, "index")
    loaded = load_registry_index(indexes, Ref(settings.search.index_name, "production"))
    catalog = CatalogStore.for_settings(settings)
    try:
        imgs = list(catalog.iter_images())
        owner = {img.image_id: img.item_id for img in imgs}
        items = catalog.get_items(sorted({img.item_id for img in imgs}))
    finally:
        catalog.close()
    first: dict[str, int] = {}
    for img in imgs:
        first.setdefault(img.item_id, img.image_id)
    ids = np.asarray(
        [i for i in first.values() if loaded.index.contains(np.asarray([i]))[0]], np.int64
    )
    if not len(ids):
        return []
    # The stored vectors are the catalog's own embeddings: no need to embed again.
    vectors = loaded.index.reconstruct(ids)
    fetch = min(loaded.index.ntotal, 4 * k + 10)
    _, found = loaded.index.search(vectors, fetch)
    out = []
    for image_id, row in zip(ids.tolist(), found, strict=True):
        me = owner[image_id]
        if not items[me].available:
            continue
        neighbours: list[str] = []
        for hit in row:
            other = owner.get(int(hit))
            if other is None or other == me or other in neighbours:
                continue
            neighbours.append(other)
            if len(neighbours) == k:
                break
        if len(neighbours) == k and not any(items[n].available for n in neighbours):
            out.append(
                {
                    "item_id": me,
                    "title": items[me].title,
                    "category": items[me].category,
                    "neighbours": neighbours,
                }
            )
    return out


def collect_report(
    settings: Settings, kinds: KindRegistry, *, artifacts: list[Path] | None = None
) -> ReportData:
    """Gather every figure the report shows; missing sources become notes, not errors.

    ``kinds`` are the products the serving layer knows (``serve.products.default_kinds``, which
    this layer may not import): each gets its row, built or not.
    """
    data = ReportData(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), str(settings.home))
    models = Registry(settings.models_dir, "model")
    indexes = Registry(settings.index_dir, "index")
    data.versions = _versions(models, kinds) + _versions(indexes, kinds)
    data.products = _products(kinds, data.versions)
    for row in data.versions:
        lat = row["latency"]
        if lat.get("p95_ms") is not None:
            data.latency.append(
                {
                    "source": f"{row['ref']} checks",
                    "figure": f"{row['kind']} latency ms",
                    "median": lat.get("median_ms"),
                    "p95": lat.get("p95_ms"),
                }
            )
    roots = (
        artifacts
        if artifacts is not None
        else [settings.home / "artifacts", Path.cwd() / "artifacts"]
    )
    data.latency += _benchmarks(roots)
    data.refreshes = _refreshes(settings.var_dir / "refresh")
    catalog = CatalogStore.for_settings(settings)
    try:
        catalog.create_schema()
        data.categories = catalog.categories()
    finally:
        catalog.close()
    data.items_without_images = _items_without_images(settings.db_url)
    try:
        data.lonely = lonely_items(settings)
        data.lonely_note = "computed on the production index, top 10 by its own vectors"
    except (LookalikeError, RuntimeError) as exc:
        data.lonely_note = f"not computed: {getattr(exc, 'message', exc)}"
    try:
        data.fit_data = _fit_data(settings)
        if not data.fit_data["reviews"]:
            data.fit_note = "no rental reviews yet: run `lookalike fit import FILE`"
    except LookalikeError as exc:
        data.fit_note = f"not computed: {exc.message}"
    try:
        events = EventStore(settings.db_url)
        events.create_schema()
        data.ctr = events.ctr_at_10().to_dict()
        events.close()
    except LookalikeError as exc:
        data.notes.append(f"feedback events unavailable: {exc.message}")
    return data


# -- rendering --------------------------------------------------------------------------------
def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(data: ReportData) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("the report needs matplotlib: pip install 'lookalike[report]'") from exc
    plots: dict[str, str] = {}
    order = [p["product"] for p in data.products]
    series = dict(
        sorted(
            _metric_series(data.versions).items(),
            key=lambda kv: order.index(kv[0][0]) if kv[0][0] in order else len(order),
        )
    )
    if series:
        cols = min(3, len(series))
        rows_ = -(-len(series) // cols)
        fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols, 2.8 * rows_), squeeze=False)
        for ax, ((product, metric, direction), lines) in zip(
            axes.flat, series.items(), strict=False
        ):
            for (kind, marker), points in lines.items():
                ax.plot(
                    [ref for ref, _ in points],
                    [value for _, value in points],
                    marker=marker,
                    label=kind,
                )
            if product == "search" and data.ctr and data.ctr.get("ctr") is not None:
                ax.axhline(data.ctr["ctr"], color="tab:red", linestyle="--", label="CTR@10")
            ax.set_title(f"{product}: {metric} ({direction} is better)", fontsize=9)
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(series) :]:
            ax.set_visible(False)
        fig.suptitle("The metric each product is held to, by version", fontsize=10)
        fig.tight_layout()
        plots["metric"] = _png(fig)
    if data.latency:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(data.latency) + 1.2))
        labels = [f"{r['source']}: {r['figure']}" for r in data.latency]
        y = np.arange(len(labels))
        ax.barh(y - 0.2, [float(r["median"] or 0) for r in data.latency], 0.4, label="median")
        ax.barh(y + 0.2, [float(r["p95"] or 0) for r in data.latency], 0.4, label="p95")
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xscale("log")
        ax.legend(fontsize=8)
        ax.set_title("Latency and throughput percentiles (units as labelled)")
        plots["latency"] = _png(fig)
    if data.refreshes:
        fig, ax = plt.subplots(figsize=(7, 2.5))
        counts = Counter(r["status"] for r in data.refreshes)
        ax.bar(list(counts), list(counts.values()), color="tab:blue")
        ax.set_title(f"Refresh outcomes (last {len(data.refreshes)} runs)")
        plots["refresh"] = _png(fig)
    if data.categories:
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(data.categories) + 1))
        names = [c for c, _ in data.categories][::-1]
        counts_ = [n for _, n in data.categories][::-1]
        colors = ["tab:red" if n < FEW_ITEMS else "tab:gray" for n in counts_]
        ax.barh(names, counts_, color=colors)
        ax.axvline(FEW_ITEMS, color="tab:red", linestyle=":")
        ax.set_title(f"Items per category (red: fewer than {FEW_ITEMS})")
        plots["categories"] = _png(fig)
    return plots


def _metric_series(
    versions: list[dict[str, Any]],
) -> dict[tuple[str, str, str], dict[tuple[str, str], list[tuple[str, float]]]]:
    """(product, metric, direction) -> (artifact kind, marker) -> [(ref, value)] by version."""
    out: dict[tuple[str, str, str], dict[tuple[str, str], list[tuple[str, float]]]] = {}
    for v in versions:
        for m in v["metrics"]:
            key = (v["product"], m["metric"], m["direction"])
            line = (v["kind"], "s" if v["kind"] == "index" else "o")
            out.setdefault(key, {}).setdefault(line, []).append((v["ref"], m["value"]))
    return out


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.3g}"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p class='empty'>none</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(plots: dict[str, str], key: str, alt: str) -> str:
    if key not in plots:
        return "<p class='empty'>no data to plot yet</p>"
    return f"<img alt='{html.escape(alt)}' src='{plots[key]}'>"


_CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;font-size:13px}th{background:#f4f4f4}.empty{color:#888}img{max-width:100%}"""


def _product_rows(data: ReportData) -> list[list[Any]]:
    """A row per product and production metric; a product with nothing promoted says how to
    build one (never a figure it does not have)."""
    rows: list[list[Any]] = []
    for p in data.products:
        if not p["production"]:
            status = "not built yet" if not p["versions"] else "nothing promoted"
            rows.append([p["product"], status, "-", "-", "-", f"run `{p['build']}`"])
        for m in p["production"]:
            rows.append(
                [
                    p["product"],
                    m["artifact"],
                    m["metric"],
                    m["direction"],
                    _fmt(m["value"]),
                    m["source"],
                ]
            )
    return rows


def _fit_sections(data: ReportData) -> list[str]:
    """Sizes and body types with little fit data, and users with little history."""
    fit = data.fit_data
    if not fit or not fit.get("reviews"):
        note = html.escape(data.fit_note or "not computed")
        return [
            f"<h3>Sizes and body types with little fit data</h3><p class='empty'>{note}</p>",
            f"<h3>Users with little history</h3><p class='empty'>{note}</p>",
        ]
    users = max(1, fit["users"])
    by = fit["users_by_reviews"]
    return [
        f"<h3>Sizes and body types with fewer than {FEW_FIT_REVIEWS} reviews "
        f"({len(fit['thin'])})</h3><p>of {fit['reviews']:,} rental reviews: the fit model "
        "has seen few shoppers like these, so its answers for them are the least certain</p>",
        _table(
            ["by", "value", "reviews"],
            [[t["by"], t["value"], t["reviews"]] for t in fit["thin"][:200]],
        ),
        "<h3>Users with little history</h3><p>reviews are a lower bound on rentals</p>",
        _table(
            ["reviews per user", "users", "share"],
            [[k, n, f"{n / users:.1%}"] for k, n in by.items()],
        ),
    ]


def render_html(data: ReportData, plots: dict[str, str]) -> str:
    fallbacks = [r for r in data.refreshes if r["fell_back"]]
    rate = f"{len(fallbacks)}/{len(data.refreshes)}" if data.refreshes else "no runs yet"
    ctr = data.ctr or {}
    few = [(c, n) for c, n in data.categories if n < FEW_ITEMS]
    parts = [
        f"<h1>Lookalike report</h1><p>Generated {html.escape(data.generated_at)} for "
        f"<code>{html.escape(data.home)}</code>.</p>",
        "<h2 id='metric'>The metric each product is held to</h2>",
        "<p>Each artifact is measured by its deploy checks on held-out data (the figure a "
        "promote compares with production); search's index through the index itself (golden "
        "queries, or self-retrieval top-1 when the golden items are not in the catalog).</p>",
        _table(
            ["product", "production", "metric", "better", "value", "measured on"],
            _product_rows(data),
        ),
        _img(plots, "metric", "the metric of each product by version"),
        _table(
            [
                "product",
                "artifact",
                "aliases",
                "created",
                "metric",
                "value",
                "measured on",
                "checks",
            ],
            [
                [
                    v["product"],
                    v["ref"],
                    v["aliases"],
                    v["created_at"],
                    m["metric"] if m else "-",
                    _fmt(m["value"]) if m else "not measured",
                    m["source"] if m else "",
                    "not run" if v["checks"] is None else ("passed" if v["checks"] else "failed"),
                ]
                for v in data.versions
                for m in (v["metrics"] or [None])
            ],
        ),
        "<h3>Online: click-through within the top 10</h3>",
        _table(
            [
                "searches with impressions",
                "with a click in the top 10",
                "CTR@10",
                "impressions",
                "clicks",
            ],
            [
                [
                    ctr.get("searches"),
                    ctr.get("clicked"),
                    "no searches yet" if ctr.get("ctr") is None else f"{ctr['ctr']:.1%}",
                    ctr.get("impressions"),
                    ctr.get("clicks"),
                ]
            ]
            if ctr
            else [],
        ),
        "<h2 id='latency'>Latency percentiles</h2>",
        _img(plots, "latency", "latency percentiles"),
        _table(
            ["source", "figure", "median", "p95"],
            [[r["source"], r["figure"], r["median"], r["p95"]] for r in data.latency],
        ),
        "<h2 id='fallback'>Fallback rate</h2>",
        f"<p>Refresh runs whose embedder stepped down the runtime ladder: <b>{rate}</b>. "
        "Per-request fallbacks of the server are in <code>/metrics</code> "
        "(<code>served_by</code> labels).</p>",
        _img(plots, "refresh", "refresh outcomes"),
        _table(
            ["started", "status", "served by", "fell back", "seconds", "summary"],
            [
                [
                    r["started_at"],
                    r["status"],
                    r["served_by"],
                    r["fell_back"],
                    r["seconds"],
                    r["summary"],
                ]
                for r in data.refreshes[::-1][:20]
            ],
        ),
        "<h2 id='edge-cases'>Edge cases worth a human's eye</h2>",
        f"<h3>Items without images ({len(data.items_without_images)})</h3>",
        _table(["item"], [[i] for i in data.items_without_images[:200]]),
        f"<h3>Categories with few items (&lt; {FEW_ITEMS}): {len(few)}</h3>",
        _img(plots, "categories", "items per category"),
        _table(["category", "items"], [[c, n] for c, n in few]),
        f"<h3>Items whose {TOP_K} nearest neighbours are all unavailable "
        f"({len(data.lonely)})</h3><p>{html.escape(data.lonely_note)}</p>",
        _table(
            ["item", "title", "category", "neighbours"],
            [
                [r["item_id"], r["title"], r["category"], " ".join(r["neighbours"])]
                for r in data.lonely[:200]
            ],
        ),
        *_fit_sections(data),
        "<h3>Not yet measured</h3>",
        _table(
            ["edge case", "status"],
            [["items with low stock", "not yet measured: stock is not modelled (only available)"]],
        ),
    ]
    if data.notes:
        parts.append(
            "<h2>Notes</h2><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
            + "</ul>"
        )
    body = "\n".join(parts)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Lookalike report {html.escape(data.generated_at)}</title>"
        f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_report(
    settings: Settings, out: Path, kinds: KindRegistry, *, artifacts: list[Path] | None = None
) -> Path:
    """Collect, plot and write the report to ``out`` (atomically); returns ``out``."""
    data = collect_report(settings, kinds, artifacts=artifacts)
    write_output(out, render_html(data, _plots(data)))
    return Path(out)
