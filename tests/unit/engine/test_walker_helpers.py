"""Pure helpers of the runtime around the walker: sticky variant choice, CEL, retry backoff.

Dotted paths (`NodeContext.lookup`) are `kalcifer_common.comparisons`, tested in `tests/unit/common`.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.settings import EngineSettings
from kalcifer_engine.domain.variants import weighted_choice
from kalcifer_engine.runtime.run import plain_json, retry_delay

variants = st.lists(
    st.tuples(st.text(min_size=1, max_size=5), st.floats(min_value=0, max_value=100)), min_size=1, max_size=6
)


@given(variants, st.text(max_size=20))
def test_weighted_choice_is_deterministic_and_never_picks_a_zero_weight_when_others_exist(
    options: list[tuple[str, float]], seed: str
) -> None:
    chosen = weighted_choice(options, seed)
    assert chosen == weighted_choice(options, seed)
    assert chosen in {key for key, _ in options}
    if any(weight > 0 for _, weight in options):
        assert any(key == chosen and weight > 0 for key, weight in options)


def test_retry_backoff_doubles_up_to_its_cap() -> None:
    settings = EngineSettings(retry_backoff_seconds=2, retry_backoff_max_seconds=10)
    assert [retry_delay(settings, n).total_seconds() for n in (1, 2, 3, 4)] == [2, 4, 8, 10]


def test_outputs_become_plain_json() -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    assert plain_json({"at": datetime(2030, 1, 1, tzinfo=UTC), "price": Decimal("1.50")}) == {
        "at": "2030-01-01T00:00:00+00:00",
        "price": "1.50",
    }
