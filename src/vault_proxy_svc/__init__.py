"""vault_proxy_svc: card tokens; the only place a card number is ever readable."""
