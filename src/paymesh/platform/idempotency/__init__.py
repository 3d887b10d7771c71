"""One idempotency for every POST of every service, in the spirit of Stripe's design
(brandur.org/idempotency-keys): the key row is the request's state.

- `keys`: the pure rules: the key as the caller may send it, the keyed digests stored for
  it and for its request, and what a stored row means for a request that comes with its key.
- `table`: the table each service keeps its keys in (its own schema, its own migration).
- `store`: claim → bind → settle against that table, fenced.
- `rpc`: the key of the call in hand (read and checked once by the server interceptor) and
  the servicer decorator."""
