"""How `make run` and the test meshes place the back office: its own port (BACKOFFICE_PORT,
8090 by default, never one of the mesh's others), its URL in the banner, every service
process's /metrics handed to it, and its own database role."""

from __future__ import annotations

from backoffice.config import BackofficeSettings
from dev.devmesh import Ports, print_banner, service_database_urls


def test_the_back_office_listens_on_backoffice_port_and_make_run_prints_its_url(capsys):
    assert Ports.from_env({}).backoffice == 8090
    ports = Ports.from_env({"BACKOFFICE_PORT": "18090"})

    print_banner(ports, 1.0)

    assert "back office: http://127.0.0.1:18090" in capsys.readouterr().err.splitlines()


def test_a_test_meshs_back_office_has_a_free_port_of_its_own():
    ports = Ports.free(gateway_processes=2)
    taken = [port for _, port in ports.by_variable()]

    assert ("BACKOFFICE_PORT", ports.backoffice) in ports.by_variable()
    assert len(set(taken)) == len(taken)


def test_the_back_office_reads_every_service_processs_metrics_and_calls_the_services():
    ports = Ports.free(gateway_processes=2)
    env = ports.service_env()

    settings = BackofficeSettings(metrics_urls=env["BACKOFFICE_METRICS_URLS"])
    processes = {"gateway", "gateway-2", "vault", "rebill", "webhook", "rebill_worker"}
    assert set(settings.metrics_targets()) == processes
    targets = dict(pair.split("=", 1) for pair in env["BACKOFFICE_METRICS_URLS"].split(","))
    assert targets["gateway"] == f"http://127.0.0.1:{ports.http['gateway']}/metrics"
    assert targets["gateway-2"] == f"http://127.0.0.1:{ports.more_gateways[0][1]}/metrics"
    assert targets["rebill_worker"] == f"http://127.0.0.1:{ports.rebill_worker}/metrics"
    assert env["BACKOFFICE_PORT"] == str(ports.backoffice)
    assert env["REBILL_ADDR"] == f"127.0.0.1:{ports.grpc['rebill']}"


def test_the_back_office_connects_as_its_own_role():
    urls = service_database_urls({"DATABASE_URL": "postgresql://postgres@h:5432/db"})

    assert urls["BACKOFFICE_DATABASE_URL"] == "postgresql://paymesh_backoffice@h:5432/db"
