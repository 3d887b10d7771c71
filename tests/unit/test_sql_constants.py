"""`constant()`: a value written into the SQL text, for partial indexes' predicates."""

from __future__ import annotations

import pytest
from sqlalchemy import column, select
from sqlalchemy.dialects import postgresql

from paymesh.platform.db import constant


def test_a_constant_is_rendered_into_the_sql_not_bound():
    compiled = (
        select(column("id"))
        .where(column("state") == constant("running"))
        .compile(dialect=postgresql.dialect())
    )
    assert "state = 'running'" in str(compiled)
    assert not compiled.params


@pytest.mark.parametrize("value", ["it's", "a b", "x;--", ""])
def test_only_plain_words_can_be_constants(value):
    with pytest.raises(ValueError, match="plain word"):
        constant(value)
