"""The back office's /healthz, which the kubelet's probes ask (deploy/kubernetes/base/
backoffice.yaml): answered without a session."""

from __future__ import annotations

from tests.support.backoffice import console


def test_healthz_answers_alive_without_a_session():
    app = console()

    answer = app.client.get("/healthz", follow_redirects=False)

    assert answer.status_code == 200
    assert answer.json() == {"status": "alive"}
    assert answer.headers["cache-control"] == "no-store"
    assert "set-cookie" not in answer.headers  # no pre-session cookie for every probe
