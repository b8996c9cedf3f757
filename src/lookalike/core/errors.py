"""One exception tree for the whole project.

    LookalikeError (500)
    ├── NotFound (404)
    ├── InvalidInput (400)
    │   ├── BadImage (422)            corrupt or truncated image
    │   │   └── UnsupportedImage (415) not an image, or a format we do not read
    │   ├── TooLarge (413)            too many bytes, or too many pixels
    │   └── DimensionMismatch (400)   vectors of the wrong width
    ├── Unavailable (503)             nothing can answer right now (no model, saturated)
    ├── IntegrityError (500)          an artifact does not match its manifest
    └── ConfigError (500)             settings or artifacts that cannot work together

Lower-layer errors (Pillow, onnxruntime, faiss, SQLAlchemy) are translated at the boundary with
``raise ... from exc``. Every error carries the HTTP status and a short machine-readable code, so
one FastAPI handler turns any of them into ``{"error": {"code", "message"}}``. Messages name the
fix where there is one.
"""

from __future__ import annotations

__all__ = [
    "short_reason",
    "BadImage",
    "ConfigError",
    "DimensionMismatch",
    "IntegrityError",
    "InvalidInput",
    "LookalikeError",
    "NotFound",
    "TooLarge",
    "Unavailable",
    "UnsupportedImage",
]


class LookalikeError(Exception):
    """Base of every error the project raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class NotFound(LookalikeError):
    status = 404
    code = "not_found"


class InvalidInput(LookalikeError):
    status = 400
    code = "invalid_input"


class BadImage(InvalidInput):
    status = 422
    code = "bad_image"


class UnsupportedImage(BadImage):
    status = 415
    code = "unsupported_media_type"


class TooLarge(InvalidInput):
    status = 413
    code = "too_large"


class DimensionMismatch(InvalidInput):
    code = "dimension_mismatch"


class Unavailable(LookalikeError):
    status = 503
    code = "unavailable"


class IntegrityError(LookalikeError):
    code = "integrity_error"


class ConfigError(LookalikeError):
    code = "config_error"


def short_reason(exc: BaseException, limit: int = 300) -> str:
    """One line saying why ``exc`` happened: our own message, else the first line of str()."""
    if isinstance(exc, LookalikeError):
        return exc.message[:limit]
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
