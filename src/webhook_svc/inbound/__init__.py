"""PSP webhooks in: the signature checked, the event recorded once in the inbox, its facts
applied through the gateway's PspEventService."""
