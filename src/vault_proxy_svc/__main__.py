from paymesh.platform.server import run
from vault_proxy_svc.service import DEFINITION

run(DEFINITION)
