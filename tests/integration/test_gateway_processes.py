"""Several gateway processes behind Envoy: calls reach every one of them, and what must be
single (the recovery sweep and its payments_inflight_total refresh) runs in exactly one at a
time, a standby taking over when the holder dies."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import urllib.request

import grpc
import psycopg
import pytest

from dev.devmesh import Mesh, Ports, gateway_process_name
from paymesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paymesh.platform.advisory_lock import SessionLock, lock_key
from paymesh.platform.db import create_engine
from tests.support.mesh import base_env, create_merchant, migrated_infra, started_mesh
from tests.support.ops import admin, ok
from tests.support.payments import pay
from tests.support.waiting import wait_until

PROCESSES = 2


@pytest.fixture(scope="module")
def two_gateways(infra, tmp_path_factory):
    """A whole mesh with two gateway processes, on a database of its own (the session mesh's
    sweep would otherwise hold the lock on the session's database)."""
    ports = Ports.free(gateway_processes=PROCESSES)
    with migrated_infra("paymesh_two_gateways") as own:
        env = base_env(own, **ports.service_env())
        merchant = create_merchant(own, "two-gateways")
        with started_mesh(env, ports, tmp_path_factory.mktemp("two-gateways")) as mesh:
            yield mesh, merchant


def metrics(ops_port: int) -> str:
    url = f"http://127.0.0.1:{ops_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our URL
        return response.read().decode()


def sample(text: str, name: str) -> float | None:
    return next(
        (float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")),
        None,
    )


def sweeping(mesh: Mesh) -> dict[str, bool]:
    """Per live gateway process: whether its sweep is the active one. A process reports the
    in-flight gauge only while it sweeps: that is what the lock keeps single."""
    states = {}
    for index, (_, ops_port) in enumerate(mesh.ports.gateways):
        name = gateway_process_name(index)
        if mesh.processes[name].poll() is not None:
            continue
        text = metrics(ops_port)
        active = sample(text, "payments_recovery_sweep_active")
        refreshes_inflight = "payments_inflight_total{" in text
        assert active in (0.0, 1.0), f"{name} has not run a sweep round yet"
        assert refreshes_inflight == (active == 1.0), name
        states[name] = active == 1.0
    return states


def sweep_rounds(mesh: Mesh, name: str) -> float:
    """The completed rounds of the recovery sweep the gateway process `name` counted."""
    [ops_port] = [
        ops
        for index, (_, ops) in enumerate(mesh.ports.gateways)
        if gateway_process_name(index) == name
    ]
    return sample(metrics(ops_port), "payments_recovery_sweep_rounds_total") or 0.0


def one_sweeping(mesh: Mesh) -> str | None:
    try:
        states = sweeping(mesh)
    except AssertionError:
        return None
    active = [name for name, on in states.items() if on]
    return active[0] if len(active) == 1 and len(states) == PROCESSES else None


def handled_payments(ops_port: int) -> float:
    return sum(
        float(line.split()[-1])
        for line in metrics(ops_port).splitlines()
        if line.startswith("gateway_requests_total{") and 'method="CreatePaymentIntent"' in line
    )


def test_envoy_spreads_payments_over_every_gateway_process(two_gateways):
    mesh, merchant = two_gateways
    before = [handled_payments(ops) for _, ops in mesh.ports.gateways]
    for _ in range(20):
        assert pay(mesh, merchant).body["status"] == "succeeded"
    after = [handled_payments(ops) for _, ops in mesh.ports.gateways]
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == 20
    assert all(count > 0 for count in served), served


def test_exactly_one_process_sweeps_and_a_standby_takes_over_when_it_dies(two_gateways):
    mesh, merchant = two_gateways
    holder = wait_until(lambda: one_sweeping(mesh), timeout=15, interval=0.25)
    # It stays single over several of its rounds, and only the holder counts rounds.
    standby = next(name for name in sweeping(mesh) if name != holder)
    standby_rounds = sweep_rounds(mesh, standby)
    holder_rounds = sweep_rounds(mesh, holder)

    def single_over_rounds() -> bool:
        assert one_sweeping(mesh) == holder
        return sweep_rounds(mesh, holder) >= holder_rounds + 3

    wait_until(single_over_rounds, timeout=15, interval=0.25)
    assert sweep_rounds(mesh, standby) == standby_rounds

    mesh.processes[holder].send_signal(signal.SIGKILL)
    mesh.processes[holder].wait()

    def taken_over():
        states = sweeping(mesh)
        return list(states) != [holder] and all(states.values())

    wait_until(taken_over, timeout=15, interval=0.25)
    # Envoy stops routing to the dead process: payments still go through.
    wait_until(lambda: pay(mesh, merchant).status == 200, timeout=15, interval=0.5)

    revive_gateways(mesh)
    # Back, it stands by: the lock stays where it went.
    successor = wait_until(lambda: one_sweeping(mesh), timeout=15, interval=0.25)
    assert successor != holder


def test_the_sweeps_rounds_count_on_and_stop_while_a_round_cannot_finish(two_gateways):
    mesh, _ = two_gateways
    holder = wait_until(lambda: one_sweeping(mesh), timeout=15, interval=0.25)
    normal = sweep_rounds(mesh, holder)
    wait_until(lambda: sweep_rounds(mesh, holder) >= normal + 2, timeout=15)

    # How long the oldest statement waiting for the table has waited (seconds; 0: none).
    waiting = (
        "SELECT coalesce(extract(epoch FROM max(now() - a.query_start)), 0)"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND l.relation = 'gateway.payment_intents'::regclass"
    )
    with (
        psycopg.connect(mesh.env["DATABASE_URL"]) as db,
        psycopg.connect(mesh.env["DATABASE_URL"], autocommit=True) as watcher,
    ):
        db.execute("LOCK TABLE gateway.payment_intents IN ACCESS EXCLUSIVE MODE")
        # A round has begun and waits for the table: until it is let go, none can end...
        wait_until(lambda: watcher.execute(waiting).fetchone()[0] > 0, timeout=15)
        stuck = sweep_rounds(mesh, holder)
        # ...and none ends while it has waited longer than three rounds' interval (0.5 s).
        wait_until(lambda: watcher.execute(waiting).fetchone()[0] > 1.5, timeout=15)
        assert sweep_rounds(mesh, holder) == stuck
        db.rollback()
    wait_until(lambda: sweep_rounds(mesh, holder) > stuck, timeout=15)


def revive_gateways(mesh: Mesh) -> None:
    """Starts again every gateway process a test killed, on its own ports."""
    for index, (grpc_port, ops_port) in enumerate(mesh.ports.gateways):
        name = gateway_process_name(index)
        if mesh.processes[name].poll() is None:
            continue
        env = {**mesh.env, "GATEWAY_GRPC_PORT": str(grpc_port), "GATEWAY_HTTP_PORT": str(ops_port)}
        mesh.spawn(name, [sys.executable, "-m", "gateway_svc"], env=env)
        mesh.wait_until([f"http://127.0.0.1:{ops_port}/readyz"], 30)


def test_the_lock_goes_to_a_standby_once_the_holders_session_ends(infra):
    async def scenario():
        engines = [create_engine(infra.database_url) for _ in range(2)]
        first, second = (SessionLock(engine, "test-single-job") for engine in engines)
        try:
            assert await first.held()
            assert not await second.held()
            assert await first.held()  # held across rounds, not re-taken
            with psycopg.connect(infra.database_url, autocommit=True) as db:
                # The holder's connection dies, as it does with its process.
                db.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND objid = %s AND granted",
                    (lock_key("test-single-job"),),
                )
            assert await wait_async(second.held)
            assert not await first.held()
        finally:
            for lock in (first, second):
                await lock.release()
            for engine in engines:
                await engine.dispose()

    asyncio.run(asyncio.wait_for(scenario(), 30))


async def wait_async(predicate, timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def list_status(grpc_port: int, api_key: str) -> grpc.StatusCode:
    """A merchant's call straight to one gateway process."""
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        try:
            gateway_pb2_grpc.GatewayServiceStub(channel).ListPaymentIntents(
                gateway_pb2.ListPaymentIntentsRequest(limit=1),
                metadata=(("authorization", f"Bearer {api_key}"),),
                timeout=5,
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_a_key_rolled_on_one_process_stops_working_on_every_process_at_once(two_gateways):
    mesh, _ = two_gateways
    revive_gateways(mesh)  # whatever an earlier test left
    created = ok(admin(mesh, "CreateMerchant", {"name": "two-gateway-keys"}))
    old = created["secret_key"]
    ports = [grpc_port for grpc_port, _ in mesh.ports.gateways]
    assert all(list_status(port, old) == grpc.StatusCode.OK for port in ports)  # remembered

    rolled = ok(admin(mesh, "RollApiKey", {"merchant_id": created["merchant"]["id"]}))

    # The roll went to the first process; the other hears of it within moments, not after
    # its 30 s memory of the key runs out.
    started = time.monotonic()
    wait_until(
        lambda: all(list_status(port, old) == grpc.StatusCode.UNAUTHENTICATED for port in ports),
        timeout=3,
    )
    assert time.monotonic() - started < 3
    assert all(list_status(port, rolled["secret_key"]) == grpc.StatusCode.OK for port in ports)
