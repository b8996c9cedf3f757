"""moderation (layer 4)."""
