from paymesh.platform.server import run

from gateway_svc.service import DEFINITION

run(DEFINITION)
