"""Alembic migrations of the service's schema (run by ``commsvc migrate`` and on worker start)."""
