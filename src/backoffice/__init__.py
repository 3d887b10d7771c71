"""The back office: the finance and operations console, a web application that is a client
of the mesh like any other (its own service identity `backoffice`, the services' gRPC stubs;
it reads no other service's tables). Its own schema holds operators, their sessions and the
audit of what they did."""

from pathlib import Path

NAME = "backoffice"  # its service identity, database role and `paymesh migrate` name
SCHEMA = "backoffice"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
