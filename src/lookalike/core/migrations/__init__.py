"""Alembic migrations of the project database, run by ``lookalike.core.db.migrate(url)``.

``env.py`` only runs online, on the connection ``migrate`` hands it (under its lock); there is
no alembic.ini. A new revision: add ``versions/vNNNN_what.py`` with ``down_revision`` set to
the current head (``script.py.mako`` is the template ``alembic revision`` would use).
"""
