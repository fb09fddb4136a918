"""A real workload, so that pg_stat_statements has rows."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

# --- a real workload, so that pg_stat_statements has rows -----------------------------------

WORKLOAD_SCHEMA = "pgcache_workload"
SECOND_ROLE = "pgcache_workload_reader"

_SCHEMA_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {WORKLOAD_SCHEMA};
CREATE TABLE IF NOT EXISTS {WORKLOAD_SCHEMA}.customers (
    id int PRIMARY KEY, name text NOT NULL, region text NOT NULL);
CREATE TABLE IF NOT EXISTS {WORKLOAD_SCHEMA}.orders (
    id serial PRIMARY KEY, customer int NOT NULL, amount numeric(12, 2) NOT NULL,
    created timestamptz NOT NULL, note text);
CREATE INDEX IF NOT EXISTS orders_customer ON {WORKLOAD_SCHEMA}.orders (customer);
"""

_FILL_SQL = f"""
INSERT INTO {WORKLOAD_SCHEMA}.customers
    SELECT i, 'customer ' || i, (ARRAY['eu', 'us', 'apac'])[1 + i % 3]
    FROM generate_series(1, 200) AS i;
INSERT INTO {WORKLOAD_SCHEMA}.orders (customer, amount, created, note)
    SELECT 1 + i % 200, (i % 997) / 7.0, now() - make_interval(mins => i), 'note ' || i
    FROM generate_series(1, 5000) AS i;
ANALYZE {WORKLOAD_SCHEMA}.customers;
ANALYZE {WORKLOAD_SCHEMA}.orders;
"""

_T = WORKLOAD_SCHEMA
_FIXED_SHAPES: dict[str, str] = {
    "count_all": f"SELECT count(*) FROM {_T}.orders",
    "by_customer": f"SELECT id, amount FROM {_T}.orders WHERE customer = %s",
    "sum_by_customer": f"SELECT customer, sum(amount) FROM {_T}.orders GROUP BY customer",
    "avg_by_region": f"SELECT c.region, avg(o.amount) FROM {_T}.orders o "
    f"JOIN {_T}.customers c ON c.id = o.customer GROUP BY c.region",
    "top_orders": f"SELECT id, amount FROM {_T}.orders ORDER BY amount DESC LIMIT %s",
    "recent": f"SELECT id FROM {_T}.orders WHERE created > now() - make_interval(mins => %s)",
    "customer_name": f"SELECT name FROM {_T}.customers WHERE id = %s",
    "like_note": f"SELECT count(*) FROM {_T}.orders WHERE note LIKE %s",
    "insert_order": f"INSERT INTO {_T}.orders (customer, amount, created, note) "
    "VALUES (%s, %s, now(), 'workload')",
    "update_order": f"UPDATE {_T}.orders SET amount = amount + 0 WHERE id = %s",
    "delete_none": f"DELETE FROM {_T}.orders WHERE id = -%s",
    "sort_temp": f"SELECT note FROM {_T}.orders ORDER BY note DESC OFFSET %s LIMIT 1",
    "shared_by_two_roles": f"SELECT max(amount) FROM {_T}.orders WHERE customer < %s",
}

_COLUMNS = ("id", "customer", "amount", "created", "note")
_FILTERS = (("customer", "="), ("customer", "<"), ("amount", ">"), ("id", "<"))


def _generated_shapes() -> Iterator[tuple[str, str]]:
    """Endless distinct shapes: column lists x filters (each a different queryid)."""
    width = 1
    while width <= len(_COLUMNS):
        for columns in itertools.combinations(_COLUMNS, width):
            for column, operator in _FILTERS:
                name = f"select_{'_'.join(columns)}_where_{column}_{_OPERATOR_NAMES[operator]}"
                sql = (
                    f"SELECT {', '.join(columns)} FROM {_T}.orders "
                    f"WHERE {column} {operator} %s LIMIT 50"
                )
                yield name, sql
        width += 1


_OPERATOR_NAMES = {"=": "eq", "<": "lt", ">": "gt"}


def _params(sql: str, run: int) -> tuple[Any, ...]:
    count = sql.count("%s")
    if "LIKE" in sql:
        return (f"note {run}%",)
    if "INSERT" in sql:
        return (1 + run % 200, run)
    return tuple(run * 13 % 200 + 1 for _ in range(count))


@dataclass(frozen=True)
class Workload:
    """The queries run, by name, with their pg_stat_statements queryid."""

    queryids: dict[str, int]
    runs_per_shape: int
    #: a queryid with entries for two roles (None when the second role could not log in)
    shared_queryid: int | None

    @property
    def negative_ids(self) -> list[int]:
        return sorted(queryid for queryid in self.queryids.values() if queryid < 0)

    @property
    def positive_ids(self) -> list[int]:
        return sorted(queryid for queryid in self.queryids.values() if queryid > 0)


def queryid_of(url: str, sql: str, params: tuple[Any, ...] = ()) -> int:
    """The queryid PostgreSQL computes for ``sql``, without running or recording it.

    EXPLAIN VERBOSE shows the identifier; with ``pg_stat_statements.track = top`` for this
    session the explained statement gets no (nested) pg_stat_statements entry of its own.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SET pg_stat_statements.track = top")
        row = conn.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) {sql}", params).fetchone()
        assert row is not None
        plan: list[dict[str, Any]] = row[0]
        return int(plan[0]["Query Identifier"])


def run_workload(url: str, *, min_shapes: int = 40, runs_per_shape: int = 5) -> Workload:
    """Create the schema (once), run at least ``min_shapes`` distinct queries, return their ids.

    Shapes are added until both a negative and a positive queryid are among them.
    """
    queryids: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _SCHEMA_SQL.split(";"):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute(f"SELECT count(*) FROM {_T}.customers").fetchone()
        if row is not None and row[0] == 0:
            for statement in _FILL_SQL.split(";"):
                if statement.strip():
                    conn.execute(statement)
        generated = _generated_shapes()
        shapes = list(_FIXED_SHAPES.items())
        while len(shapes) < min_shapes:
            shapes.append(next(generated))
        index = 0
        while index < len(shapes):
            name, sql = shapes[index]
            for run in range(runs_per_shape):
                conn.execute(sql, _params(sql, run))
            queryids[name] = queryid_of(url, sql, _params(sql, 0))
            index += 1
            signs = {queryid > 0 for queryid in queryids.values()}
            if index == len(shapes) and signs != {True, False}:
                shapes.append(next(generated))
    shared_sql = _FIXED_SHAPES["shared_by_two_roles"]
    return Workload(
        queryids=queryids,
        runs_per_shape=runs_per_shape,
        shared_queryid=_run_as_second_role(url, shared_sql, runs_per_shape),
    )


def _run_as_second_role(url: str, sql: str, runs: int) -> int | None:
    """Run ``sql`` as another role, so that its queryid has entries for two users."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                f"DO $$ BEGIN CREATE ROLE {SECOND_ROLE} LOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
            conn.execute(f"GRANT USAGE ON SCHEMA {_T} TO {SECOND_ROLE}")
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {_T} TO {SECOND_ROLE}")
            queryid = queryid_of(url, sql, _params(sql, 0))
        with psycopg.connect(url, user=SECOND_ROLE, autocommit=True) as conn:
            for run in range(runs):
                conn.execute(sql, _params(sql, run))
    except psycopg.Error:
        return None
    return queryid


def extractor_statement_calls(url: str) -> int:
    """How many times the feature extractors' statement has run (from pg_stat_statements)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE query LIKE '/* pgcache.features */%'"
        ).fetchone()
        return 0 if row is None else int(row[0])
