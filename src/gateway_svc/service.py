"""Wiring: the one place where gateway_svc's adapters are built and handed to the servicers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import structlog
from sqlalchemy import func, select

from gateway_svc import tables
from gateway_svc.admin import MerchantAdminServicer
from gateway_svc.backoffice import BackOfficeServicer
from gateway_svc.config import GatewaySettings
from gateway_svc.domain.status import Pending
from gateway_svc.merchants import SETTINGS_CHANGED, MerchantRepository
from gateway_svc.metrics import (
    PAYMENTS_INFLIGHT,
    RECOVERY_SWEEP_ACTIVE,
    RECOVERY_SWEEP_ROUNDS,
)
from gateway_svc.payments import recovery
from gateway_svc.payments.context import Payments
from gateway_svc.psp.breaker import BreakerPolicy
from gateway_svc.psp.card_tokens import CardTokens
from gateway_svc.psp.connectors import SandboxConnector, StripeConnector
from gateway_svc.psp.routing import PspRouter, RetryPolicy, make_breaker
from gateway_svc.psp.settlements import SandboxSettlements, StripeSettlements
from gateway_svc.psp.vault import VaultClient
from gateway_svc.psp_events import PspEventServicer
from gateway_svc.reconciliation.runner import Reconciler, Who
from gateway_svc.reconciliation.servicer import ReconciliationServicer
from gateway_svc.reconciliation.store import ReconciliationStore
from gateway_svc.repository.backoffice import BackOfficeRepository
from gateway_svc.repository.disputes import DisputeRepository
from gateway_svc.repository.payments import PaymentRepository
from gateway_svc.repository.psp_events import PspEventRepository
from gateway_svc.repository.rows import to_dispute, to_intent, to_refund
from gateway_svc.servicer import (
    CardAccessServicer,
    GatewayServicer,
    MerchantAuthServicer,
    dispute_message,
    payment_intent_message,
    refund_message,
)
from paymesh.gateway.v1 import (
    backoffice_pb2,
    backoffice_pb2_grpc,
    card_access_pb2,
    card_access_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    merchant_admin_pb2,
    merchant_admin_pb2_grpc,
    merchant_auth_pb2,
    merchant_auth_pb2_grpc,
    psp_events_pb2,
    psp_events_pb2_grpc,
    reconciliation_pb2,
    reconciliation_pb2_grpc,
)
from paymesh.platform.advisory_lock import SessionLock
from paymesh.platform.audit_checkpoints import AuditCheckpointer
from paymesh.platform.audit_keys import AuditKeys
from paymesh.platform.callers import CachedApiKeyVerifier, Callers
from paymesh.platform.channels import service_channel
from paymesh.platform.idempotency.store import Idempotency
from paymesh.platform.loop_lag import LoopLag
from paymesh.platform.notifications import listen
from paymesh.platform.outbox import ApiObject
from paymesh.platform.secrets import RotatingSecret
from paymesh.platform.server import Resources, ServiceDefinition

log = structlog.get_logger(__name__)
RECOVERY_SWEEP_LOCK = "gateway-recovery-sweep"
RECONCILIATION_LOCK = "gateway-reconciliation"


async def register(server: grpc.aio.Server, resources: Resources) -> list:
    settings = resources.settings
    assert isinstance(settings, GatewaySettings)
    engine = resources.engine
    audit_keys = AuditKeys.load(settings.key_store())
    audit_checkpoints = AuditCheckpointer(
        engine,
        f"{tables.SCHEMA}.{tables.payment_audit.name}",
        audit_keys,
        settings.audit_checkpoint_interval_seconds,
        session_engine=resources.session_engine,
    )
    api_keys = CachedApiKeyVerifier(MerchantRepository(engine))
    callers = Callers(api_keys, resources.token_verifier)
    loop_lag = LoopLag()
    timeout = settings.psp_timeout_seconds
    psp_keys = settings.psp_keys()
    connectors = {
        "sandbox": SandboxConnector(
            settings.sandbox_api_base, timeout, loop_lag, psp_keys["sandbox"]
        ),
        "stripe": StripeConnector(settings.stripe_api_base, psp_keys["stripe"], timeout, loop_lag),
    }
    policy = BreakerPolicy(
        failure_ratio=settings.breaker_failure_ratio,
        window_calls=settings.breaker_window_calls,
        window_seconds=settings.breaker_window_seconds,
        min_calls=settings.breaker_min_calls,
        open_seconds=settings.breaker_reset_seconds,
        probes=settings.breaker_probes,
    )
    router = PspRouter(
        connectors,
        {name: make_breaker(name, policy) for name in connectors},
        RetryPolicy(attempts=settings.psp_attempts, deadline_seconds=settings.psp_deadline_seconds),
    )
    vault_channel = service_channel(settings.vault_addr, resources.token_issuer, "vault")
    key_secret = resources.token_issuer.derived_secret("gateway idempotency keys")
    idempotency = Idempotency(
        engine,
        resources.direct_sql,
        tables.idempotency_keys,
        lambda: key_secret,
        stale_seconds=settings.idempotency_stale_after,
    )
    repository = PaymentRepository(engine, resources.direct_sql, resources.read_engine)
    card_tokens = CardTokens(
        VaultClient(vault_channel, settings.vault_timeout_seconds, router.observe_card),
        repository,
        ttl_seconds=settings.card_token_ttl_seconds,
    )
    payments = Payments(repository, router, card_tokens)
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
        GatewayServicer(
            payments, idempotency, callers, DisputeRepository(engine, resources.read_engine)
        ),
        server,
    )
    card_access_pb2_grpc.add_CardAccessServiceServicer_to_server(
        CardAccessServicer(repository, card_tokens, callers), server
    )
    merchant_auth_pb2_grpc.add_MerchantAuthServiceServicer_to_server(
        MerchantAuthServicer(api_keys, callers), server
    )
    psp_events_pb2_grpc.add_PspEventServiceServicer_to_server(
        PspEventServicer(PspEventRepository(engine, resources.direct_sql), callers), server
    )
    merchant_admin_pb2_grpc.add_MerchantAdminServiceServicer_to_server(
        MerchantAdminServicer(MerchantRepository(engine), callers, api_keys), server
    )

    reconciler = build_reconciler(settings, engine, psp_keys)
    reconciliation_pb2_grpc.add_ReconciliationServiceServicer_to_server(
        ReconciliationServicer(reconciler, callers), server
    )

    backoffice_pb2_grpc.add_BackOfficeServiceServicer_to_server(
        BackOfficeServicer(
            BackOfficeRepository(engine, resources.read_engine),
            payments,
            idempotency,
            callers,
            audit_keys,
            VaultClient(vault_channel, settings.vault_timeout_seconds),
        ),
        server,
    )

    sweep_lock = SessionLock(resources.session_engine, RECOVERY_SWEEP_LOCK)

    async def keep_payments_moving() -> None:
        """Settles PSP operations whose outcome is unknown; refreshes payments_inflight_total.
        In one gateway process at a time: the others stand by and ask for the lock each round."""
        try:
            while True:
                try:
                    if await sweep_lock.held():
                        # The counts first: an active sweep always reports them.
                        await refresh_inflight(engine)
                        RECOVERY_SWEEP_ACTIVE.set(1)
                        await recovery.recover(payments, settings.recovery_after_seconds)
                        RECOVERY_SWEEP_ROUNDS.inc()
                    else:
                        stand_by()
                except Exception:  # retried next round
                    log.exception("recovery_round_failed")
                await asyncio.sleep(settings.recovery_interval_seconds)
        finally:
            await sweep_lock.release()
            await vault_channel.close()
            for connector in connectors.values():
                await connector.close()

    def forget_merchant_settings(_merchant_id: str = "") -> None:
        api_keys.forget()
        payments.forget_routes()

    settings_changes = listen(
        resources.session_engine,
        SETTINGS_CHANGED,
        forget_merchant_settings,
        forget_merchant_settings,
    )
    return [
        keep_payments_moving(),
        loop_lag.run(),
        settings_changes,
        audit_checkpoints.run(),
        reconcile_on_schedule(
            reconciler, SessionLock(resources.session_engine, RECONCILIATION_LOCK), settings
        ),
        *(key.refresh(settings.secrets_refresh_seconds) for key in psp_keys.values()),
    ]


def build_reconciler(
    settings: GatewaySettings, engine, psp_keys: dict[str, RotatingSecret] | None = None
) -> Reconciler:
    timeout = settings.reconciliation_timeout_seconds
    keys = psp_keys if psp_keys is not None else settings.psp_keys()
    clients = {
        "sandbox": lambda: SandboxSettlements(settings.sandbox_api_base, timeout, keys["sandbox"]),
        "stripe": lambda: StripeSettlements(settings.stripe_api_base, timeout, keys["stripe"]),
    }
    return Reconciler(ReconciliationStore(engine), clients)


async def reconcile_on_schedule(
    reconciler: Reconciler, lock: SessionLock, settings: GatewaySettings
) -> None:
    """Each PSP's last day, once its last successful run is an interval old; in one gateway
    process at a time (the others stand by and ask for the lock each round)."""
    interval = settings.reconciliation_interval_seconds
    psps = [p.strip() for p in settings.reconciliation_psps.split(",") if p.strip()]
    if not interval:
        return
    try:
        while True:
            try:
                if await lock.held():
                    await reconciler.refresh_last_success()
                    for psp in psps:
                        if await reconciler.due(psp, interval):
                            await reconciler.run(psp, None, None, Who("scheduler"))
            except Exception:  # tried again next round
                log.exception("scheduled_reconciliation_failed")
            await asyncio.sleep(min(interval, 60.0))
    finally:
        await lock.release()


def stand_by() -> None:
    """A standby reports no in-flight counts of its own, so that summing
    payments_inflight_total over every gateway process counts each intent once."""
    RECOVERY_SWEEP_ACTIVE.set(0)
    PAYMENTS_INFLIGHT.clear()


# payments_inflight_total's statuses: the PSP operation whose outcome is being decided.
INFLIGHT_STATUSES = {
    Pending.AUTHORIZE: "processing",
    Pending.CAPTURE: "capture_pending",
    Pending.VOID: "void_pending",
}
REFUND_PENDING = "refund_pending"


async def refresh_inflight(engine) -> None:
    """payments_inflight_total: operations sent to a PSP (or about to be) and not settled,
    unknown outcomes waiting for the sweep included. An intent waiting for its customer or
    merchant (requires_payment_method after a decline, requires_confirmation,
    requires_capture with nothing pending) is not in flight."""
    intents, refunds = tables.payment_intents, tables.refunds
    async with engine.connect() as connection:
        pending = dict(
            (
                await connection.execute(
                    select(intents.c.pending_operation, func.count())
                    .where(intents.c.pending_operation.is_not(None))
                    .group_by(intents.c.pending_operation)
                )
            ).all()
        )
        refunding = await connection.scalar(
            select(func.count()).select_from(refunds).where(refunds.c.status == "pending")
        )
    for operation, status in INFLIGHT_STATUSES.items():
        PAYMENTS_INFLIGHT.labels(status).set(pending.get(operation, 0))
    PAYMENTS_INFLIGHT.labels(REFUND_PENDING).set(refunding or 0)


# Events carry these as GET /v1/payment_intents/{id}, /v1/refunds/{id} and /v1/disputes/{id}
# answer them.
EVENT_OBJECTS = {
    # webhook_svc tells the PSP's echo of a capture from news by the PSP's reference.
    "payment_intent": ApiObject(
        tables.payment_intents,
        lambda row: payment_intent_message(to_intent(row)),
        internal=("psp_reference",),
    ),
    "refund": ApiObject(tables.refunds, lambda row: refund_message(to_refund(row))),
    "dispute": ApiObject(tables.disputes, lambda row: dispute_message(to_dispute(row))),
}

DEFINITION = ServiceDefinition(
    name="gateway",
    package="gateway_svc",
    schema=tables.SCHEMA,
    grpc_services=(
        gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
        merchant_auth_pb2.DESCRIPTOR.services_by_name["MerchantAuthService"].full_name,
        merchant_admin_pb2.DESCRIPTOR.services_by_name["MerchantAdminService"].full_name,
        card_access_pb2.DESCRIPTOR.services_by_name["CardAccessService"].full_name,
        psp_events_pb2.DESCRIPTOR.services_by_name["PspEventService"].full_name,
        reconciliation_pb2.DESCRIPTOR.services_by_name["ReconciliationService"].full_name,
        backoffice_pb2.DESCRIPTOR.services_by_name["BackOfficeService"].full_name,
    ),
    settings_class=GatewaySettings,
    migrations_dir=Path(__file__).parent / "migrations",
    outbox=tables.outbox,
    register=register,
    event_objects=EVENT_OBJECTS,
)
