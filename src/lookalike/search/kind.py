"""The search kind: an image embedder (``models/``) and the index built with it (``index/``).

A search release is anchored on the index: ``catalog:<alias>`` plus the embedder named in that
index's manifest. Promoting a model therefore changes nothing that is served until an index built
with it passes its checks and is promoted; a restart at any point of a model deploy keeps serving
the last pair that was promoted together, and /health says which model waits for its index.
Rolling the model back rolls back the index built with it in the same step.
"""

from __future__ import annotations

from typing import Any, ClassVar

from lookalike.catalog import CatalogStore
from lookalike.core.errors import InvalidInput, LookalikeError, NotFound
from lookalike.lifecycle import Kind, LoadContext, MetricGate, Release
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import CheckReport
from lookalike.search.gates import INDEX_CHECKS, MODEL_CHECKS, check_index, check_model
from lookalike.search.served import SearchGeneration

__all__ = ["SearchKind"]


class SearchKind(Kind):
    task: ClassVar[str] = "image-embedding"
    product: ClassVar[str] = "search"
    roles: ClassVar[tuple[str, ...]] = ("model", "index")
    check_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "model": MODEL_CHECKS,
        "index": INDEX_CHECKS,
    }

    def registry(self, role: str) -> Registry:
        if role == "model":
            return Registry(self.settings.models_dir, "model")
        if role == "index":
            return Registry(self.settings.index_dir, "index")
        raise InvalidInput(f"search has no role {role!r} (roles: model, index)")

    def artifact_name(self, role: str) -> str:
        return (
            self.settings.search.model_name if role == "model" else self.settings.search.index_name
        )

    def metric_gates(self, role: str) -> tuple[MetricGate, ...]:
        # The model is held to Recall@10 against production; an index's retrieval check is an
        # absolute floor (golden or self-retrieval), not a comparison, so it declares no gate.
        if role == "model":
            return (MetricGate("recall@10", True, self.settings.gates.tolerance),)
        return ()

    def check(self, role: str, ref: Ref, **options: Any) -> CheckReport:
        if role == "model":
            return check_model(
                self.settings,
                ref,
                pairs=options.get("pairs"),
                root=options.get("root"),
                split=options.get("split"),
                gate=self.metric_gates("model")[0],
            )
        return check_index(self.settings, ref, model=options.get("model"))

    def release(self, alias: str) -> Release:
        indexes = self.registry("index")
        index_ref = indexes.resolve(Ref(self.artifact_name("index"), alias))
        built_with = indexes.manifest(index_ref).get("embedder")
        if not built_with:
            raise NotFound(f"index {index_ref} does not name the embedder it was built with")
        model_ref = Ref.parse(str(built_with))
        notes: list[str] = []
        try:
            production = self.registry("model").resolve(Ref(model_ref.name, "production"))
        except LookalikeError:
            production = None
        if production is not None and production != model_ref:
            notes.append(
                f"model {production} is production but waits for an index built with it: "
                f"search serves {model_ref} with {index_ref} — run `lookalike index build`"
            )
        return Release(self.product, alias, {"model": model_ref, "index": index_ref}, tuple(notes))

    def load(self, release: Release, context: LoadContext) -> SearchGeneration:
        catalog = context.shared.get("catalog")
        if not isinstance(catalog, CatalogStore):
            raise InvalidInput("the search kind needs the catalog store in context.shared")
        return SearchGeneration.load(release, context, catalog)

    def rollback_with(self, role: str, moved_from: Ref) -> list[str]:
        if role != "model":
            return []
        indexes = self.registry("index")
        name = self.artifact_name("index")
        try:
            built_with = indexes.manifest(Ref(name, "production")).get("embedder")
        except LookalikeError:
            return []
        # The index built with the model being rolled back goes back with it (if it can).
        if built_with == str(moved_from) and "previous" in indexes.aliases(name):
            return ["index"]
        return []

    def after_promote(self, role: str, ref: Ref) -> list[str]:
        if role != "model":
            return []
        try:
            release = self.release("production")
        except LookalikeError:
            return [f"no index yet: run `lookalike index build` so that search serves {ref}"]
        if release.members["model"] != ref:
            return [
                f"search keeps serving {release.describe()} until an index built with {ref} "
                "passes its checks: run `lookalike index build`"
            ]
        return []
