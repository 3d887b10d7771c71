# syntax=docker/dockerfile:1
# Four targets, all built by docker-compose.yml:
#   app (the default, last stage)  one image for the four services; compose sets `command`
#   envoy                          the Envoy edge with the descriptor set built in
#   descriptor                     builds Envoy's descriptor set (build/paymesh.pb) from proto/
#   sandbox-psp                    the PSP simulator (a developer tool, not in the app image)

# --- descriptor: the same command as `make build/paymesh.pb`, on a clean interpreter ---
FROM python:3.11-slim AS descriptor
RUN pip install --no-cache-dir grpcio-tools==1.85.1 "googleapis-common-protos>=1.70,<2"
WORKDIR /src
COPY tools/ tools/
COPY proto/ proto/
COPY envoy/edge.lua envoy/edge.lua
RUN python tools/gen_protos.py --descriptor-out /out/paymesh.pb \
 && python tools/gen_openapi.py /out/paymesh.pb /out/openapi.json \
 && python tools/gen_edge_lua.py /out/paymesh.pb envoy/edge.lua /out/edge.lua

# --- envoy: upstream Envoy (Ubuntu based: sh, bash and sed are there) + the descriptor set.
# compose mounts envoy/envoy.yaml and rewrites its upstream addresses at start.
FROM envoyproxy/envoy:v1.40-latest AS envoy
COPY --from=descriptor /out/paymesh.pb /etc/paymesh/paymesh.pb
COPY --from=descriptor /out/openapi.json /etc/paymesh/openapi.json
COPY --from=descriptor /out/edge.lua /etc/paymesh/edge.lua

# --- sandbox-psp: the PSP simulator, a developer tool (standard library only). An image of its
# own, so that the service image ships no developer tools.
FROM python:3.11-slim AS sandbox-psp
ENV PYTHONUNBUFFERED=1
COPY dev/sandbox_psp.py /opt/sandbox/sandbox_psp.py
USER nobody
EXPOSE 8430
CMD ["python", "/opt/sandbox/sandbox_psp.py", "--host", "0.0.0.0", "--port", "8430"]

# --- app: gateway_svc, vault_proxy_svc, rebill_svc, webhook_svc and the `paymesh` CLI ---
FROM python:3.11-slim AS app
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The generated stubs are committed under src/paymesh/*/v1: no codegen here. Only src/ is
# installed: the developer tools (the mesh runner, the sandbox PSP) live in dev/, outside it.
COPY pyproject.toml /tmp/paymesh/
COPY src/ /tmp/paymesh/src/
RUN rm -rf /tmp/paymesh/src/*.egg-info \
    && pip install --no-cache-dir /tmp/paymesh \
    && rm -rf /tmp/paymesh \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin paymesh \
    && install -d -o paymesh -g paymesh -m 0700 /var/lib/paymesh
# /var/lib/paymesh: the service keys and the vault keyring (compose mounts a named volume here;
# an empty named volume takes this directory's owner and mode on first mount).
WORKDIR /app
USER paymesh
# gRPC 50051-50054, the ops HTTP ports (/metrics /healthz /readyz) 9101-9104, the back office 8090
EXPOSE 50051 50052 50053 50054 9101 9102 9103 9104 8090
