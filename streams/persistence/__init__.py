"""The relational record of what the service did (SQLAlchemy 2; PostgreSQL or SQLite)."""
