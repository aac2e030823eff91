"""Id columns read as text are stripped exactly as Python's ``str.strip`` would, also on the
fast path for text columns (which strips only the values that need it)."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from sendtime.features.contract import _as_text, _text_of

_CHARS = st.sampled_from(list("ab1-_.") + [" ", "\t", "\n", "\x0b", "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u3000"])


def _reference(s: pd.Series) -> list:
    out = s.astype("object")
    mask = out.notna()
    out = out.where(~mask, out[mask].map(_text_of))
    return out.where(out.astype(str) != "", None).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(_CHARS, max_size=6)), min_size=1, max_size=30))
def test_text_column_fast_path_strips_like_python(values):
    s = pd.Series(values, dtype="str")
    assert str(_as_text(s).tolist()) == str(_reference(s))


def test_blank_and_padded_ids():
    s = pd.Series([" u1", "u2\t", "   ", "", None, "u 3"], dtype="str")
    got = _as_text(s).tolist()
    assert got[:2] == ["u1", "u2"] and got[2] is None and got[3] is None and got[5] == "u 3"
