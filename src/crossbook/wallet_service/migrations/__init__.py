"""Alembic environment and revisions of the wallet service's database (see `env`)."""
