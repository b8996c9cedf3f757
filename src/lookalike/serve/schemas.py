"""Request and response schemas of the HTTP API (they are the OpenAPI documentation)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = [
    "Category",
    "CategoryList",
    "ErrorBody",
    "ErrorResponse",
    "GarmentGroupOut",
    "ItemOut",
    "ResultItem",
    "SearchResponse",
]


class ResultItem(BaseModel):
    item_id: str
    title: str
    category: str
    price: float = Field(description="Rental price in the catalog's currency")
    available: bool = Field(description="Can be rented now")
    score: float = Field(description="Cosine similarity of the best-matching image, -1..1")
    image_url: str
    url: str | None = None
    region: str = Field("whole", description="Which crop of the query photo matched")
    box: list[float] | None = Field(
        None, description="That crop's box in the query photo, normalised [x0, y0, x1, y1]"
    )


class GarmentGroupOut(BaseModel):
    region: str = Field(description="whole, upper, lower or a located garment")
    box: list[float] | None
    score: float
    results: list[ResultItem]


class SearchResponse(BaseModel):
    results: list[ResultItem]
    groups: list[GarmentGroupOut] = Field(
        default_factory=list, description="Results per garment, with `per_garment=true`"
    )
    crop_mode: str = Field("whole", description="Which crops of the photo were searched")
    model_version: str = Field(description="Embedder that answered, name:version")
    index_version: str = Field(description="Index that answered, name:version")
    served_by: str = Field(description="Runtime path that answered, e.g. onnxruntime-cpu:int8")
    fallback: str | None = Field(
        None,
        description="Why a fallback step answered (the step that failed or timed out, and how); "
        "null when the primary path answered",
    )
    took_ms: float
    request_id: str


class ItemOut(BaseModel):
    item_id: str
    title: str
    category: str
    price: float
    available: bool
    url: str | None
    image_urls: list[str]


class Category(BaseModel):
    name: str
    count: int


class CategoryList(BaseModel):
    categories: list[Category]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
