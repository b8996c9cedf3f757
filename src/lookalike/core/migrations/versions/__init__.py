"""Alembic revisions, oldest first: ``v0001_initial`` is every table that existed before."""
