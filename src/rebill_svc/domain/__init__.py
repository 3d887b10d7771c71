"""rebill_svc's domain: plain Python (no gRPC, SQL or broker), tested on its own."""
