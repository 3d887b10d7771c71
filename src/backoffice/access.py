"""Who may see what: each page's roles, in one place (the nav shows only these)."""

from __future__ import annotations

ROLES = ("finance", "ops", "admin")

# (path, nav label, roles that may open it), in the nav's order.
PAGES: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("/payments", "Payments", frozenset({"finance", "admin"})),
    ("/subscriptions", "Subscriptions", frozenset({"finance", "ops", "admin"})),
    ("/reconciliation", "Reconciliation", frozenset({"finance", "admin"})),
    ("/disputes", "Disputes", frozenset({"finance", "admin"})),
    ("/exports", "Exports", frozenset({"finance", "admin"})),
    ("/dead-letters", "Dead letters", frozenset({"ops", "admin"})),
    ("/merchants", "Merchants", frozenset({"ops", "admin"})),
    ("/system", "System", frozenset({"ops", "admin"})),
    ("/operators", "Operators", frozenset({"admin"})),
)


# Any signed-in operator may sign out.
EVERYONE_PATHS = frozenset({"/logout"})


def roles_for(path: str) -> frozenset[str]:
    """The roles that may open `path` (a page or anything under it); admin for unknown ones."""
    if path in EVERYONE_PATHS:
        return frozenset(ROLES)
    for prefix, _label, roles in PAGES:
        if path == prefix or path.startswith(prefix + "/"):
            return roles
    return frozenset({"admin"})


def may_open(role: str, path: str) -> bool:
    return role in roles_for(path)


def nav_for(role: str) -> list[tuple[str, str]]:
    """(path, label) of every page `role` may open."""
    return [(path, label) for path, label, roles in PAGES if role in roles]


def home_for(role: str) -> str:
    return nav_for(role)[0][0] if nav_for(role) else "/login"
