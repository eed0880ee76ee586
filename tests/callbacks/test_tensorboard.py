"""The TensorBoard TEXT tab shows samples as the text they are."""

from lmtemplate.callbacks.tensorboard import cell


def test_a_sample_cell_keeps_line_breaks_and_shows_text_not_its_repr():
    assert cell("the dogs\nrun .") == "the dogs<br>run ."
    assert cell("'quoted' text") == "'quoted' text"  # no repr(): no added quotes or escapes


def test_markdown_characters_and_table_pipes_are_shown_as_written():
    assert cell("a | b") == "a \\| b"  # a pipe would end the table cell
    assert cell("*x* _y_ [z] <b>") == "\\*x\\* \\_y\\_ \\[z\\] \\<b\\>"


def test_an_empty_sample_is_marked():
    assert cell("") == "*(empty)*"
