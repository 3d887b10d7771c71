"""Back-office page loads with 100,000 payments in the database (issue 32): GET /payments?q=…
(a payment's id, a merchant's id, an amount in minor units, a PSP reference), a status and
PSP filter, and GET /payments/{id}, as a signed-in finance operator's browser asks for the
page's HTML (not its lazily loaded charts), one page at a time (c=1: a person's page load)
and a few at once (several operators).

    .venv/bin/python bench/backoffice_pages.py
    .venv/bin/python bench/backoffice_pages.py --payments 100000 --seconds 10 --concurrency 1,4

Starts a mesh of its own (fresh database and vhost, free ports) and the back office on it;
pays a few payments through Envoy, then writes `--payments` more straight into the gateway's
tables as the gateway would have (payment_audit rows in the shape the real payments' rows
have, chained by the database's own trigger), spread as a shop's would be: 25 merchants of
very different sizes, 90 days, amounts around 40.00 USD (some EUR and GBP), mostly succeeded,
some declined, authorized, canceled or refunded, at the sandbox PSP or Stripe. Prints
p50/p95/p99 of each page beside the machine's echo reference (bench/harness.py)."""

from __future__ import annotations

import asyncio
import http.cookiejar
import itertools
import json
import random
import re
import string
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from harness import (  # noqa: E402
    BIN,
    KeepAliveHttp,
    closed_loop,
    cpu_per_request,
    cpu_seconds,
    machine_reference,
    mesh_arguments,
    running_mesh,
)
from summary import record  # noqa: E402

ALPHABET = string.ascii_letters + string.digits  # as paymesh.platform.ids makes ids
MERCHANTS = 25
DAYS = 90
# (status, share of payments): a shop's mix.
STATUSES = [
    ("succeeded", 0.82),
    ("requires_payment_method", 0.09),  # declined
    ("requires_capture", 0.04),
    ("canceled", 0.03),
    ("processing", 0.02),
]
CURRENCIES = [("usd", 0.85), ("eur", 0.10), ("gbp", 0.05)]
REFUNDED_SHARE = 0.05  # of the succeeded ones
APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"


def random_id(prefix: str, rng: random.Random, length: int = 24) -> str:
    return prefix + "".join(rng.choices(ALPHABET, k=length))


def pick(rng: random.Random, shares: list[tuple[str, float]]) -> str:
    return rng.choices([v for v, _ in shares], weights=[w for _, w in shares])[0]


def rest(bench, path: str, body: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - our own mesh
        bench.mesh.url(path),
        json.dumps(body).encode(),
        {"content-type": "application/json", "authorization": f"Bearer {bench.secret_key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def real_payments(bench) -> list[str]:
    """A few payments through Envoy (approved, declined, authorized only, canceled, one of
    them refunded): their audit rows are the templates of the written ones (the first of
    each final status), and their pages are read too."""
    year = datetime.now(UTC).year + 2
    ids = []
    kinds = [(APPROVED_CARD, "automatic")] * 5 + [(DECLINED_CARD, "automatic")] * 2
    kinds += [(APPROVED_CARD, "manual")] * 2
    for i, (number, capture) in enumerate(kinds):
        card = {"number": number, "exp_month": 12, "exp_year": year, "cvc": "123"}
        token = rest(bench, "/v1/payment_methods", {"card": card})["id"]
        body = {"amount": 1500 + i, "currency": "usd", "payment_method": token, "confirm": True}
        ids.append(rest(bench, "/v1/payment_intents", {**body, "capture_method": capture})["id"])
    rest(bench, f"/v1/payment_intents/{ids[-1]}/cancel", {})
    rest(bench, "/v1/refunds", {"payment_intent": ids[1], "amount": 500})
    time.sleep(1)  # the refund's webhook and its audit row
    return ids


def audit_templates(db: psycopg.Connection, intent_ids: list[str]) -> dict[str, list[tuple]]:
    """Each real payment's audit rows (actor, action, result, details as text, with its own id
    as `{id}`), keyed by the payment's final status."""
    templates: dict[str, list[tuple]] = {}
    for intent_id in intent_ids:
        status = db.execute(
            "SELECT status FROM gateway.payment_intents WHERE id = %s", (intent_id,)
        ).fetchone()[0]
        rows = db.execute(
            "SELECT actor, action, result, details::text FROM gateway.payment_audit"
            " WHERE object_id = %s ORDER BY id",
            (intent_id,),
        ).fetchall()
        shaped = [(a, b, c, d.replace(intent_id, "{id}")) for a, b, c, d in rows]
        templates.setdefault(status, shaped)
    return templates


# Audit rows per transaction: the chain trigger puts a transaction's rows into chain
# (transaction id mod 32), so the gateway's many small transactions spread a merchant's rows
# over its 32 chains; one transaction for all would make one chain per merchant, which a
# payment's page checks whole.
AUDIT_ROWS_PER_TRANSACTION = 1000


def write_audit(db: psycopg.Connection, audits: list[tuple]) -> None:
    """The audit rows, a payment's rows together, in transactions of about a thousand rows;
    the trigger numbers and hashes each as the gateway's inserts would."""
    db.commit()
    first = 0
    while first < len(audits):
        end = min(first + AUDIT_ROWS_PER_TRANSACTION, len(audits))
        while end < len(audits) and audits[end][4] == audits[end - 1][4]:
            end += 1  # the payment's remaining rows: in its transaction
        with (
            db.cursor() as cursor,
            cursor.copy(
                "COPY gateway.payment_audit (merchant_id, at, actor, action, object_id, result,"
                " details) FROM STDIN"
            ) as copy,
        ):
            for row in audits[first:end]:
                copy.write_row(row)
        db.commit()
        first = end


def write_payments(bench, count: int, real_ids: list[str], seed: int = 32) -> list[str]:
    """`count` payments, their refunds and audit rows (shaped as the `real_ids` payments'
    rows), straight into the gateway's tables; returns the payments' ids."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    merchants = [(random_id("acct_", rng, 16), f"shop {n}") for n in range(MERCHANTS)]
    # Zipf-like sizes: the first merchant has a quarter of all payments, the last a handful.
    weights = [1 / (rank + 1) for rank in range(MERCHANTS)]
    intents, refunds, audits, ids = [], [], [], []
    with psycopg.connect(bench.infra.database_url) as db:
        templates = audit_templates(db, real_ids)
        fallback = templates["succeeded"]
        # The cards the real payments were made with, as returning customers' cards.
        cards = [
            row[0]
            for row in db.execute(
                "SELECT DISTINCT payment_method FROM gateway.payment_intents WHERE id = ANY(%s)",
                (real_ids,),
            )
        ]
        for name_id, name in merchants:
            psps = ["sandbox"] if rng.random() < 0.7 else ["stripe", "sandbox"]
            db.execute(
                "INSERT INTO gateway.merchants (id, name, psp_routing) VALUES (%s, %s, %s)",
                (name_id, name, psps),
            )
        for n in range(count):
            merchant = rng.choices(merchants, weights=weights)[0][0]
            intent_id = random_id("pi_", rng)
            ids.append(intent_id)
            status = pick(rng, STATUSES)
            currency = pick(rng, CURRENCIES)
            amount = max(50, min(500_000, int(rng.lognormvariate(8.3, 0.9))))
            created = now - timedelta(seconds=rng.uniform(0, DAYS * 86400))
            psp = "sandbox" if rng.random() < 0.7 else "stripe"
            reference = random_id("ch_" if psp == "sandbox" else "pi_", rng)
            received = amount if status == "succeeded" else 0
            refunded = 0
            if status == "succeeded" and rng.random() < REFUNDED_SHARE:
                refunded = amount if rng.random() < 0.5 else amount // 2
                refunds.append(
                    (
                        random_id("re_", rng),
                        merchant,
                        intent_id,
                        refunded,
                        currency,
                        random_id("re_", rng),
                        created + timedelta(days=rng.uniform(0.1, 5)),
                    )
                )
            error = (
                json.dumps({"code": "card_declined", "decline_code": "generic_decline"})
                if status == "requires_payment_method"
                else None
            )
            intents.append(
                (
                    intent_id,
                    merchant,
                    amount,
                    currency,
                    status,
                    "manual" if status == "requires_capture" else "automatic",
                    amount if status == "requires_capture" else 0,
                    received,
                    refunded,
                    rng.choice(cards),
                    psp,
                    f"order {100000 + n}",
                    json.dumps({"order_id": str(100000 + n)}),
                    error,
                    created,
                    created,
                    reference,
                )
            )
            for actor, action, result, details in templates.get(status, fallback):
                audits.append(
                    (
                        merchant,
                        created,
                        actor,
                        action,
                        intent_id,
                        result,
                        details.replace("{id}", intent_id),
                    )
                )
        with db.cursor() as cursor:
            with cursor.copy(
                "COPY gateway.payment_intents (id, merchant_id, livemode, amount, currency,"
                " status, capture_method, amount_capturable, amount_received, amount_refunded,"
                " payment_method, psp, description, metadata, last_payment_error, created_at,"
                " updated_at, psp_reference) FROM STDIN"
            ) as copy:
                for row in intents:
                    copy.write_row((row[0], row[1], False, *row[2:]))
            with cursor.copy(
                "COPY gateway.refunds (id, merchant_id, livemode, payment_intent, amount,"
                " currency, status, reason, psp_reference, created_at) FROM STDIN"
            ) as copy:
                for r in refunds:
                    copy.write_row(
                        (
                            r[0],
                            r[1],
                            False,
                            r[2],
                            r[3],
                            r[4],
                            "succeeded",
                            "requested_by_customer",
                            r[5],
                            r[6],
                        )
                    )
        write_audit(db, audits)
        db.execute("ANALYZE gateway.payment_intents")
        db.execute("ANALYZE gateway.refunds")
        db.execute("ANALYZE gateway.payment_audit")
    return ids


_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def signed_in_cookies(url: str, email: str, password: str) -> str:
    """Signs in through /login as a browser does (the form's csrf_token, the pre-session
    cookie); the session's `Cookie` header."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(f"{url}/login", timeout=10) as page:
        token = _CSRF_FIELD.search(page.read().decode())[1]
    form = urllib.parse.urlencode({"email": email, "password": password, "csrf_token": token})
    with browser.open(f"{url}/login", form.encode(), timeout=10) as landed:
        assert not landed.url.endswith("/login"), "signing in failed"
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)


def create_operator(env: dict[str, str]) -> tuple[str, str]:
    """A finance operator, by `paymesh operators create`: (email, one-time password)."""
    command = [str(BIN / "paymesh"), "operators", "create", "--email", "bench@example.com"]
    done = subprocess.run(
        [*command, "--role", "finance"], env=env, check=True, capture_output=True, text=True
    )
    created = json.loads(done.stdout)
    return created["email"], created["password"]


def page_reader(port: int, cookies: str, paths):
    """GETs the next path of the shared cycle on each request, a 200 with HTML."""

    async def make():
        http = KeepAliveHttp(port, {"Cookie": cookies, "Accept": "text/html"})

        async def send() -> bool:
            status, _ = await http.request("GET", next(paths))
            return status == 200

        return send

    return make


# Each row measures at least this many pages (a slow page gets longer than --seconds), up to
# MOST_SECONDS.
FEWEST_PAGES = 30
MOST_SECONDS = 90.0


async def measure(bench, port: int, cookies: str, scenarios, args) -> None:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    for name, paths in scenarios:
        make = page_reader(port, cookies, itertools.cycle(paths))
        warm = await closed_loop(name, 1, 1.0, make)  # warm-up: pools, caches
        page_seconds = warm.seconds / warm.requests
        for concurrency in concurrencies:
            seconds = max(args.seconds, FEWEST_PAGES * page_seconds / concurrency)
            before = cpu_seconds(bench.mesh)
            result = await closed_loop(name, concurrency, min(seconds, MOST_SECONDS), make)
            cpu = cpu_per_request(before, cpu_seconds(bench.mesh), result.requests, "page")
            record(result, cpu, args.json_out)


def searches_and_pages(bench, ids: list[str], real_ids: list[str]) -> list[tuple[str, list]]:
    """(name, paths) of each measured page: searches as finance types them, and payments'
    pages (written ones and the real ones)."""
    with psycopg.connect(bench.infra.database_url) as db:
        biggest, smallest = db.execute(
            "(SELECT merchant_id FROM gateway.payment_intents GROUP BY 1"
            " ORDER BY count(*) DESC LIMIT 1) UNION ALL"
            " (SELECT merchant_id FROM gateway.payment_intents GROUP BY 1"
            " ORDER BY count(*) LIMIT 1)"
        ).fetchall()
        amounts, references = zip(
            *db.execute(
                "SELECT amount, psp_reference FROM gateway.payment_intents"
                " ORDER BY random() LIMIT 50"
            ).fetchall(),
            strict=True,
        )
    sample = random.Random(9).sample(ids, 200) + real_ids
    return [
        ("GET /payments?q=<id>", [f"/payments?q={i}" for i in sample]),
        ("GET /payments?q=<merchant>", [f"/payments?q={m}" for m in (*biggest, *smallest)]),
        ("GET /payments?q=<amount>", [f"/payments?q={a}" for a in amounts]),
        ("GET /payments?q=<reference>", [f"/payments?q={r}" for r in references]),
        ("GET /payments?status&psp", ["/payments?status=requires_payment_method&psp=stripe"]),
        ("GET /payments (newest)", ["/payments"]),
        ("GET /payments/{id}", [f"/payments/{i}" for i in sample]),
    ]


def main() -> None:
    parser = mesh_arguments(__doc__, "1,4")
    parser.add_argument("--payments", type=int, default=100_000)
    args = parser.parse_args()
    machine_reference()
    # Plain-HTTP session cookies: the back office listens on loopback.
    with running_mesh(1, {"BACKOFFICE_COOKIE_SECURE": "false"}) as bench:
        real_ids = real_payments(bench)
        started = time.monotonic()
        ids = write_payments(bench, args.payments, real_ids)
        print(f"wrote {len(ids):,} payments in {time.monotonic() - started:.1f} s", flush=True)
        bench.mesh.start_backoffice()
        url = bench.mesh.backoffice_url()
        cookies = signed_in_cookies(url, *create_operator(bench.mesh.env))
        scenarios = searches_and_pages(bench, ids, real_ids)
        asyncio.run(measure(bench, bench.mesh.ports.backoffice, cookies, scenarios, args))


if __name__ == "__main__":
    main()
