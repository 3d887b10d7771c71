from gateway_svc.service import DEFINITION
from paymesh.platform.server import run

run(DEFINITION)
