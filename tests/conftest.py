"""Shared pytest fixtures, and the suite's persistent compilation cache."""
import os
import shutil
import uuid

import pytest

POSTGRES_URL_ENV = "AIRA_TEST_POSTGRES_URL"
COMPILE_CACHE_ENV = "AIRA_TEST_COMPILE_CACHE"  # a folder, or 0 to compile everything afresh
COMPILE_CACHE_LIMIT_BYTES = 1 << 30


def _folder_bytes(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:
        pass
  return total


def _use_compile_cache() -> None:
  """Many tests compile the same small models (in this process and in CLI subprocesses, which inherit the
  environment); JAX's persistent cache makes the second compile a file read, which takes about a quarter off the
  suite's time even from a cold cache. It changes no numbers: an entry is keyed by the program, the compile
  options and the JAX/XLA version. The Engineer's training children inherit it as in a user's run (their compiles
  happen outside the design's code, which the runtime guard watches); gate children never see it. Set here,
  before anything imports JAX, because JAX reads these variables on import."""
  choice = os.environ.get(COMPILE_CACHE_ENV, "")
  if choice == "0" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return  # switched off, or the caller chose a cache of their own
  folder = choice or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache")
  if os.path.isdir(folder) and _folder_bytes(folder) > COMPILE_CACHE_LIMIT_BYTES:
    shutil.rmtree(folder, ignore_errors=True)  # no eviction without the filelock package: start over instead
  os.makedirs(folder, exist_ok=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


_use_compile_cache()


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
