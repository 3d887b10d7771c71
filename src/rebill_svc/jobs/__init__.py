"""A rebill job's life in storage: the store's protocol (store), what it answers with
(models), its PostgreSQL implementation (postgres, running the statements of statements) and
its in-memory twin (memory), held to one contract (tests/support/job_store_contract.py)."""
