import pytest

from pbexp.data.tokenize import tokenize


@pytest.mark.parametrize(
    "text, tokens",
    [
        # HTML line breaks in all the spellings IMDB uses are separators, never tokens
        ("one<br />two<br/>three<BR>four<br >five", ["one", "two", "three", "four", "five"]),
        ("end.<br /><br />Next", ["end", ".", "next"]),
        # punctuation becomes its own token, one per character
        ("Hello, world!!", ["hello", ",", "world", "!", "!"]),
        ("wait...what?", ["wait", ".", ".", ".", "what", "?"]),
        ('"quoted" (aside)', ['"', "quoted", '"', "(", "aside", ")"]),
        ("'single'", ["'", "single", "'"]),
        ("10/10, 7.5", ["10", "/", "10", ",", "7", ".", "5"]),
        # an apostrophe inside a word keeps the contraction whole
        ("Don't stop; it's GREAT", ["don't", "stop", ";", "it's", "great"]),
        # letters beyond ASCII are word characters
        ("Café NAÏVE", ["café", "naïve"]),
        ("  \n\t ", []),
        ("", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_lowercase_off_keeps_case():
    assert tokenize("Hello World<br />OK!", lowercase=False) == ["Hello", "World", "OK", "!"]


def test_other_html_is_punctuation_and_words():
    # only line breaks are special; other tags are not silently dropped
    assert tokenize("<i>wow</i>") == ["<", "i", ">", "wow", "<", "/", "i", ">"]
