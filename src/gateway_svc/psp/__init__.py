"""gateway_svc's adapters to the outside that moves money: PSP connectors, the router with
its retries and breakers, and the vault that hands out each PSP's token for a card."""
