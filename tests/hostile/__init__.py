"""A hostile-image corpus built by code (see corpus.py), shared by unit and integration tests."""
