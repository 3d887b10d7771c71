from paymesh.platform.server import run
from webhook_svc.service import DEFINITION

run(DEFINITION)
