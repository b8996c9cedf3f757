"""Layer 0: settings, errors, types and safe image decoding. Imports nothing internal."""

from __future__ import annotations
