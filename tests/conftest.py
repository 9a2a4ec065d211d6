"""Shared pytest fixtures."""
import os
import uuid

import pytest

POSTGRES_URL_ENV = "AIRA_TEST_POSTGRES_URL"


@pytest.fixture
def postgres_url():
    """A PostgreSQL URL whose connections work in a fresh, empty schema (dropped afterwards).

    Skips unless AIRA_TEST_POSTGRES_URL is set (`export AIRA_TEST_POSTGRES_URL="$(.ci/postgres.sh)"`).
    """
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set; run `export {POSTGRES_URL_ENV}=\"$(.ci/postgres.sh)\"` "
                    f"to test against a local PostgreSQL server")
    pytest.importorskip("psycopg", reason=f"{POSTGRES_URL_ENV} is set but psycopg 3 is not installed")
    import sqlalchemy as sa

    url = sa.make_url(base)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        # libpq's `options` sets search_path for every connection made with this URL, in any process.
        yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
