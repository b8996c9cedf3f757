"""recs (layer 4)."""
