"""AET's persistence: SQLAlchemy engine and tables, Alembic migrations, model registry and artifacts."""
