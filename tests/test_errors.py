from __future__ import annotations

from salesml.errors import first_line


def test_first_line_skips_blank_lines_and_names_an_empty_message() -> None:
    assert first_line(ValueError("\n  bad value  \ndetail")) == "bad value"
    assert first_line(KeyError("")) == "''"  # KeyError quotes its argument
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(RuntimeError("  \n "), name_if_empty=False) == ""
