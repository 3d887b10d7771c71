"""A gateway killed at a known point of a payment, and started again: for the fault tests on
the `fragile` mesh (a gateway with a database and a sandbox PSP of its own)."""

from __future__ import annotations

import signal
import sys

# A gateway that waits for a PSP's answer longer than a test takes to kill it: its PSP call
# is then cut by the crash, never by its own deadline. (The recovery delay must exceed four
# deadlines; the patient gateway dies before it would sweep anything.)
PATIENT = {
    "GATEWAY_PSP_TIMEOUT_SECONDS": "30",
    "GATEWAY_PSP_DEADLINE_SECONDS": "30",
    "GATEWAY_RECOVERY_AFTER_SECONDS": "121",
}


def kill_gateway(mesh) -> None:
    """SIGKILL: no drain, no grace, nothing recorded after this instant."""
    gateway = mesh.processes["gateway"]
    gateway.send_signal(signal.SIGKILL)
    gateway.wait()


def start_gateway(mesh, **env: str) -> None:
    """The gateway again (with `env` over the mesh's), ready to serve."""
    mesh.spawn("gateway", [sys.executable, "-m", "gateway_svc"], env={**mesh.env, **env})
    mesh.wait_until([f"http://127.0.0.1:{mesh.ports.http['gateway']}/readyz"], 30)
