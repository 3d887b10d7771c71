from paymesh.platform.server import run
from rebill_svc.service import DEFINITION

run(DEFINITION)
