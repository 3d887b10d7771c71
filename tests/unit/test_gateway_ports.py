"""Where the dev mesh's gateway processes listen, and Envoy's view of them."""

from __future__ import annotations

import yaml

from dev.devmesh import Ports, gateway_process_name, render_envoy_config, service_of


def test_make_runs_gateway_processes_listen_ten_ports_apart_from_the_first():
    ports = Ports.from_env({"GATEWAY_GRPC_PORT": "6000", "GATEWAY_HTTP_PORT": "7000"}, 3)
    assert ports.gateways == [(6000, 7000), (6010, 7010), (6020, 7020)]
    assert {7000, 7010, 7020} <= set(ports.ops_ports())


def test_free_ports_give_every_gateway_process_ports_of_its_own():
    ports = Ports.free(gateway_processes=3)
    taken = [*ports.grpc.values(), *ports.http.values(), ports.envoy, ports.envoy_admin]
    taken += [port for pair in ports.more_gateways for port in pair]
    assert len(ports.gateways) == 3
    assert len(set(taken)) == len(taken)


def test_envoys_gateway_cluster_lists_every_process_and_the_others_one():
    ports = Ports.free(gateway_processes=2)
    clusters = {
        cluster["name"]: cluster
        for cluster in yaml.safe_load(render_envoy_config(ports))["static_resources"]["clusters"]
    }

    def upstream_ports(name: str) -> list[int]:
        [group] = clusters[name]["load_assignment"]["endpoints"]
        return [
            e["endpoint"]["address"]["socket_address"]["port_value"] for e in group["lb_endpoints"]
        ]

    assert upstream_ports("gateway") == [grpc for grpc, _ in ports.gateways]
    assert clusters["gateway"]["lb_policy"] == "LEAST_REQUEST"
    assert upstream_ports("vault") == [ports.grpc["vault"]]


def test_every_gateway_process_counts_as_the_gateway():
    names = [gateway_process_name(i) for i in range(3)]
    assert names == ["gateway", "gateway-2", "gateway-3"]
    assert {service_of(name) for name in names} == {"gateway"}
    assert service_of("sandbox_psp") == "sandbox_psp"
