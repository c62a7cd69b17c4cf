"""Admin connections to the local test servers: probe, create and drop databases."""

from __future__ import annotations

import os

MYSQL_HOST = os.environ.get("CARDLINK_TEST_MYSQL", "root@127.0.0.1:3306")
POSTGRES_HOST = os.environ.get("CARDLINK_TEST_POSTGRES", "postgres@127.0.0.1:5432")


def _split(spec: str) -> tuple[str, str, int]:
    user, hostport = spec.split("@", 1)
    host, port = hostport.rsplit(":", 1)
    return user, host, int(port)


def url(backend: str, name: str) -> str:
    spec = MYSQL_HOST if backend == "mysql" else POSTGRES_HOST
    user, host, port = _split(spec)
    return f"{backend}://{user}@{host}:{port}/{name}"


def _admin(backend: str):
    if backend == "mysql":
        import pymysql

        user, host, port = _split(MYSQL_HOST)
        return pymysql.connect(host=host, port=port, user=user, autocommit=True,
                               connect_timeout=3)
    import psycopg2

    user, host, port = _split(POSTGRES_HOST)
    conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres",
                            connect_timeout=3)
    conn.autocommit = True
    return conn


def probe(backend: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        conn = _admin(backend)
        conn.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def execute(backend: str, sql: str) -> list:
    conn = _admin(backend)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def create_database(backend: str, name: str) -> None:
    if backend == "mysql":
        execute(backend, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    else:
        execute(backend, f'CREATE DATABASE "{name}"')


def drop_database(backend: str, name: str) -> None:
    if backend == "mysql":
        execute(backend, f"DROP DATABASE IF EXISTS `{name}`")
    else:
        execute(backend, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
