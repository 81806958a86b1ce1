"""Answer normalization and scoring (the official VQA normalization: punctuation, numbers, articles)."""

from __future__ import annotations

import re

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't",
    "havent": "haven't", "hes": "he's", "im": "i'm", "isnt": "isn't", "itd": "it'd", "itll": "it'll",
    "ive": "i've", "lets": "let's", "shouldnt": "shouldn't", "thats": "that's", "theres": "there's",
    "theyre": "they're", "theyve": "they've", "wasnt": "wasn't", "werent": "weren't", "whats": "what's",
    "wheres": "where's", "whos": "who's", "wont": "won't", "wouldnt": "wouldn't", "youre": "you're",
    "youve": "you've",
}
_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _strip_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or re.search(_COMMA_STRIP, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation, number words -> digits, drop articles, fix contractions."""
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _strip_punctuation(text)
    words = []
    for word in text.split():
        word = _NUMBERS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def exact_match(prediction: str, answer: str) -> float:
    """1.0 if the normalized prediction equals the normalized answer, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))
