"""The back office's reads with 100,000 payments in the gateway's tables: p50/p95/p99 of the
SearchPayments queries (each filter, and a second page) and of a payment's detail (its story,
and the check of its merchant's audit chain), and the plan PostgreSQL picks for each search.

    .venv/bin/python bench/backoffice_queries.py [--payments 100000] [--merchants 200]
        [--runs 200] [--json-out build/backoffice_bench.json]

Seeds a throwaway database (created, migrated with the gateway's migrations only, dropped
afterwards) by direct SQL, INSERT … SELECT generate_series: merchants of very different sizes
(the largest holds about a fifth of the payments), 3 in 4 payments succeeded, 1 in 10
declined, the rest authorized, canceled or refunded; 4 in 5 at the sandbox, the rest at
Stripe; amounts spread from 1.00 to 5,000.00 (log-uniform), mostly USD; created over 90 days.
Each payment has its audit rows (written through the chain's trigger, as the gateway's are),
one in 20 a refund, one in 200 a dispute. The queries are the repository's own
(gateway_svc.repository.backoffice), run in this process on one connection at a time."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.dialects import postgresql

from gateway_svc.domain.backoffice import payment_search
from gateway_svc.repository.backoffice import BackOfficeRepository, search_query
from gateway_svc.service import DEFINITION as GATEWAY
from paymesh.platform import migrations
from paymesh.platform.audit_chain import Scope, check_chains
from paymesh.platform.db import create_engine

ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

SEED = """
INSERT INTO gateway.merchants (id, name, psp_routing)
SELECT 'acct_bench' || lpad(m::text, 14, '0'), 'merchant ' || m, ARRAY['sandbox']
FROM generate_series(0, %(merchants)s - 1) m;

-- Skewed: merchant floor(n * r^3) for a uniform r (the first few hold most payments).
INSERT INTO gateway.payment_intents (
  id, merchant_id, livemode, amount, currency, status, capture_method, amount_capturable,
  amount_received, amount_refunded, payment_method, psp, last_payment_error, created_at,
  updated_at, psp_reference, attempt_key)
SELECT 'pi_' || substr(md5('pi' || g), 1, 24),
       'acct_bench' || lpad(floor(%(merchants)s * power(r1, 3))::int::text, 14, '0'),
       r2 < 0.97,
       amount,
       CASE WHEN r3 < 0.9 THEN 'usd' ELSE 'eur' END,
       status,
       CASE WHEN status = 'requires_capture' THEN 'manual' ELSE 'automatic' END,
       CASE WHEN status = 'requires_capture' THEN amount ELSE 0 END,
       CASE WHEN status = 'succeeded' THEN amount ELSE 0 END,
       CASE WHEN status = 'succeeded' AND r4 < 0.0667 THEN amount / 2 ELSE 0 END,
       'pm_' || substr(md5('pm' || g), 1, 24),
       CASE WHEN r5 < 0.8 THEN 'sandbox' ELSE 'stripe' END,
       CASE WHEN status = 'requires_payment_method' THEN
         jsonb_build_object('code', 'card_declined', 'decline_code',
           CASE WHEN r4 < 0.6 THEN 'generic_decline' ELSE 'insufficient_funds' END)
       END,
       created, created,
       CASE WHEN status <> 'requires_payment_method' THEN 'ch_' || substr(md5('ch' || g), 1, 24)
       END,
       'pi_' || substr(md5('pi' || g), 1, 24) || ':' || substr(md5('k' || g), 1, 12)
FROM (
  SELECT g, r1, r2, r3, r4, r5,
         greatest(100, round(exp(random() * ln(500000))))::bigint AS amount,
         now() - random() * interval '90 days' AS created,
         CASE WHEN s < 0.75 THEN 'succeeded' WHEN s < 0.85 THEN 'requires_payment_method'
              WHEN s < 0.92 THEN 'requires_capture' ELSE 'canceled' END AS status
  FROM (SELECT g, random() r1, random() r2, random() r3, random() r4, random() r5,
               random() s FROM generate_series(1, %(payments)s) g) x
) y;

INSERT INTO gateway.refunds (id, merchant_id, livemode, payment_intent, amount, currency,
  status, psp_reference, created_at)
SELECT 're_' || substr(md5('re' || id), 1, 24), merchant_id, livemode, id, amount_refunded,
       currency, 'succeeded', 're_psp_' || substr(md5('rr' || id), 1, 20),
       created_at + interval '1 day'
FROM gateway.payment_intents WHERE amount_refunded > 0;

INSERT INTO gateway.disputes (id, merchant_id, livemode, payment_intent, amount, currency,
  reason, status, psp, psp_reference, created_at, updated_at, evidence_due_by)
SELECT 'dp_' || substr(md5('dp' || id), 1, 24), merchant_id, livemode, id, amount_received,
       currency, 'fraudulent', (ARRAY['needs_response', 'under_review', 'won', 'lost'])[
         1 + floor(random() * 4)::int], psp, 'du_' || substr(md5('du' || id), 1, 24),
       created_at + interval '3 days', created_at + interval '3 days',
       created_at + interval '10 days'
FROM gateway.payment_intents WHERE status = 'succeeded' AND random() < 0.0067;

-- The audit rows, through the chain's trigger: each payment's create and confirm, each
-- refund's two rows, each dispute's opening; AUDIT_BATCHES transactions of their own follow.
ANALYZE;
"""

# Each batch of audit rows in a transaction of its own: the trigger chains a transaction's
# rows in one of the merchant's 32 chains (by transaction id), as the gateway's many
# transactions spread them.
AUDIT_BATCHES = 32
AUDIT = """
INSERT INTO gateway.payment_audit (merchant_id, at, actor, action, object_id, result, details)
SELECT merchant_id, at, 'api', action, object_id, result, details FROM (
  SELECT merchant_id, created_at AS at, 'create' AS action, id AS object_id, 'ok' AS result,
         jsonb_build_object('status', 'requires_confirmation', 'amount', amount) AS details,
         1 AS step
  FROM gateway.payment_intents
  UNION ALL
  SELECT merchant_id, created_at + interval '1 second', 'confirm', id,
         CASE status WHEN 'requires_payment_method' THEN 'declined'
                     WHEN 'requires_capture' THEN 'authorized' ELSE 'succeeded' END,
         jsonb_build_object('status', status, 'amount', amount, 'psp', psp,
           'trace_id', md5('t' || id)) ||
         coalesce(jsonb_build_object('decline_code', last_payment_error->>'decline_code'),
                  '{}'::jsonb), 2
  FROM gateway.payment_intents
  UNION ALL
  SELECT merchant_id, created_at, a, id, r, jsonb_build_object('payment_intent',
         payment_intent, 'amount', amount), 3
  FROM gateway.refunds CROSS JOIN (VALUES ('refund_created', 'pending'),
                                          ('refund', 'succeeded')) v(a, r)
  UNION ALL
  SELECT merchant_id, created_at, 'dispute_opened', id, status,
         jsonb_build_object('payment_intent', payment_intent, 'amount', amount), 4
  FROM gateway.disputes
) rows WHERE abs(hashtext(object_id)) % :batches = :batch ORDER BY at, step
"""


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": cut[49], "p95": cut[94], "p99": cut[98]}


async def timed(run: Callable[[], Awaitable[object]], runs: int) -> dict[str, float]:
    await run()  # warm the connection and plan caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


def plans(url: str, searches: dict[str, object]) -> dict[str, list[str]]:
    """The indexes PostgreSQL scans for each search (EXPLAIN of the repository's query)."""
    used = {}
    with psycopg.connect(url) as db:
        for name, search in searches.items():
            compiled = search_query(search, None).compile(
                dialect=postgresql.dialect(),
                compile_kwargs={"literal_binds": True},
            )
            lines = [row[0] for row in db.execute(f"EXPLAIN {compiled}")]
            scans = {
                line.split(" using ")[1].split(" on ")[0] for line in lines if " using " in line
            }
            scans |= {line.split(" on ")[1].split()[0] for line in lines if "Bitmap Index" in line}
            if any("Seq Scan on payment_intents" in line for line in lines):
                scans.add("SEQ SCAN of payment_intents")
            used[name] = sorted(scans)
    return used


async def measure(url: str, runs: int) -> dict:
    engine = create_engine(url, pool_size=2)
    repository = BackOfficeRepository(engine)
    with psycopg.connect(url) as db:
        big, small = (
            db.execute(
                "SELECT merchant_id FROM gateway.payment_intents GROUP BY 1 ORDER BY count(*) DESC"
            ).fetchall()[i][0]
            for i in (0, -1)
        )
        picks = db.execute(
            "SELECT id, amount, psp_reference FROM gateway.payment_intents"
            " WHERE psp_reference IS NOT NULL ORDER BY random() LIMIT 1"
        ).fetchone()
        sampled = [
            row[0]
            for row in db.execute(
                "SELECT id FROM gateway.payment_intents ORDER BY random() LIMIT %s", (runs,)
            )
        ]
        counts = dict(
            db.execute(
                "SELECT 'payments', count(*) FROM gateway.payment_intents UNION ALL"
                " SELECT 'audit rows', count(*) FROM gateway.payment_audit UNION ALL"
                " SELECT 'refunds', count(*) FROM gateway.refunds UNION ALL"
                " SELECT 'disputes', count(*) FROM gateway.disputes UNION ALL"
                " SELECT 'largest merchant''s payments', count(*)"
                " FROM gateway.payment_intents WHERE merchant_id = %s",
                (big,),
            ).fetchall()
        )
    week_ago = datetime.now(UTC) - timedelta(days=7)
    searches = {
        "no filter (newest 25)": payment_search(),
        "q = a pi_ id": payment_search(q=picks[0]),
        "q = the largest merchant": payment_search(q=big),
        "q = a small merchant": payment_search(q=small),
        "q = an amount": payment_search(q=str(picks[1])),
        "q = a PSP reference": payment_search(q=picks[2]),
        "status = succeeded, psp = stripe": payment_search(status="succeeded", psp="stripe"),
        "status = canceled": payment_search(status="canceled"),
        "merchant + last 7 days": payment_search(merchant_id=big, created_from=week_ago),
        "amount 1000..2000": payment_search(amount_min=1000, amount_max=2000),
        "amount >= 400000 (rare)": payment_search(amount_min=400_000),
    }
    results: dict[str, dict] = {}
    for name, search in searches.items():
        results[f"search: {name}"] = await timed(lambda s=search: repository.search(s), runs)
    first, _ = await repository.search(payment_search(limit=25))
    second = payment_search(limit=25, starting_after=first[-1].id)
    results["search: second page"] = await timed(lambda: repository.search(second), runs)

    picked = iter(sampled * 2)

    async def story() -> None:
        await repository.story(next(picked))

    results["detail: story (intent, refunds, disputes, audit rows)"] = await timed(story, runs)
    detailed = iter(sampled * 2)

    async def detail() -> None:
        """As GetPaymentDetail reads it: the story, then its rows' chains checked whole."""
        told = await repository.story(next(detailed))
        chains = sorted({row.chain for row in told.audit})
        scope = Scope(told.intent.merchant_id, chains)
        await check_chains(engine, "gateway.payment_audit", None, scope)

    results["detail: story + its chains checked (GetPaymentDetail)"] = await timed(detail, runs)

    async def big_chain() -> None:
        await check_chains(engine, "gateway.payment_audit", None, Scope(big))

    results["the largest merchant's every chain checked"] = await timed(big_chain, 10)
    await engine.dispose()
    return {"counts": counts, "milliseconds": results, "indexes": plans(url, searches)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--merchants", type=int, default=200)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    name = f"paymesh_bench_backoffice_{uuid.uuid4().hex[:8]}"
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrations.upgrade(url, GATEWAY.schema, GATEWAY.migrations_dir)
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as db:
            # Without parameters: several statements in one go (the simple query protocol).
            sizes = {"%(payments)s": args.payments, "%(merchants)s": args.merchants}
            seed = SEED
            for placeholder, size in sizes.items():
                seed = seed.replace(placeholder, str(int(size)))
            db.execute(seed)
            for batch in range(AUDIT_BATCHES):
                batched = AUDIT.replace(":batches", str(AUDIT_BATCHES))
                db.execute(batched.replace(":batch", str(batch)))
            db.execute("ANALYZE")
        seeded = time.perf_counter() - started
        report = asyncio.run(measure(url, args.runs))
        report["seed_seconds"] = round(seeded, 1)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    print(json.dumps(report["counts"]), f"seeded in {report['seed_seconds']} s")
    print(f"{'query':58} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")
    for query, figures in report["milliseconds"].items():
        print(f"{query:58} {figures['p50']:8.2f} {figures['p95']:8.2f} {figures['p99']:8.2f}")
    print("indexes each search scans (EXPLAIN):")
    for query, indexes in report["indexes"].items():
        print(f"  {query:40} {', '.join(indexes) or '-'}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
