"""The back office as the tests (and bench/backoffice_pages.py) run it: `python -m backoffice`
on a free port beside a running mesh, stopped afterwards; operators made with
`paymesh operators create`, as an operator makes them."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import re
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator

from dev.devmesh import Mesh, free_port
from tests.support.mesh import paymesh

PROCESS = "backoffice"


def backoffice_env(mesh: Mesh, port: int) -> dict[str, str]:
    """The mesh's environment (its database, keys and service addresses), and the back
    office's own port, plain-HTTP cookies (loopback) and each service's /metrics."""
    metrics = [f"{name}=http://127.0.0.1:{port}/metrics" for name, port in mesh.ports.http.items()]
    metrics.append(f"rebill_worker=http://127.0.0.1:{mesh.ports.rebill_worker}/metrics")
    return {
        **mesh.env,
        "BACKOFFICE_PORT": str(port),
        "BACKOFFICE_COOKIE_SECURE": "false",
        "BACKOFFICE_METRICS_URLS": ",".join(metrics),
    }


@contextlib.contextmanager
def running_backoffice(mesh: Mesh, timeout: float = 60) -> Iterator[str]:
    """The back office's URL (`http://127.0.0.1:<port>`) once /login answers; its log is the
    mesh's `backoffice.log`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mesh.spawn(PROCESS, [sys.executable, "-m", "backoffice"], env=backoffice_env(mesh, port))
    try:
        mesh.wait_until([f"{url}/login"], timeout)
        yield url
    finally:
        mesh.stop(PROCESS)
        del mesh.processes[PROCESS]


def create_operator(env: dict[str, str], email: str, role: str) -> dict[str, str]:
    """`paymesh operators create`: {"email", "role", "password"} (a one-time password)."""
    return json.loads(paymesh("operators", "create", "--email", email, "--role", role, env=env))


_CSRF_FIELD = re.compile(
    r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"'
)


def signed_in_cookies(url: str, email: str, password: str) -> str:
    """Signs in through /login as a browser would (its form's csrf_token, the pre-session
    cookie) and returns the session's `Cookie` header, for an HTTP client of its own."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(f"{url}/login", timeout=10) as page:
        found = _CSRF_FIELD.search(page.read().decode())
    assert found, "no csrf_token in /login's form"
    form = {"email": email, "password": password, "csrf_token": found[1] or found[2]}
    with browser.open(f"{url}/login", urllib.parse.urlencode(form).encode(), timeout=10) as landed:
        assert not landed.url.endswith("/login"), "signing in failed"
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)
