"""English text normalisation applied before espeak-ng.

``normalize_english(text)`` spells out what a phonemiser would otherwise read badly or
inconsistently: numbers (cardinals, decimals, ordinals, years, decades, percentages, times),
currency amounts, common abbreviations and symbols, and it tidies punctuation and whitespace.
Case and sentence punctuation are kept (espeak uses punctuation for phrasing).

Examples::

    "3.50"      -> "three point five zero"
    "$3.50"     -> "three dollars and fifty cents"
    "$5"        -> "five dollars"
    "1990"      -> "nineteen ninety"
    "1990s"     -> "nineteen nineties"
    "21st"      -> "twenty first"
    "Dr. Smith" -> "doctor Smith"

``check_latin_script(text)`` raises :class:`DmttsError` for text containing letters from
non-Latin scripts (Chinese, Cyrillic, ...): the English front-end cannot read them.
"""

from __future__ import annotations

import re
import unicodedata

from dmtts.errors import DmttsError

__all__ = [
    "normalize_english",
    "basic_cleanup",
    "check_latin_script",
    "check_not_empty",
    "number_to_words",
    "ordinal_to_words",
    "year_to_words",
    "digits_to_words",
    "split_sentences",
    "split_in_two",
]

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen",
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [
    (10**15, "quadrillion"),
    (10**12, "trillion"),
    (10**9, "billion"),
    (10**6, "million"),
    (10**3, "thousand"),
]
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}


# --------------------------------------------------------------------------------------------
# number to words
# --------------------------------------------------------------------------------------------
def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest:
        if rest < 20:
            words.append(_ONES[rest])
        else:
            tens, ones = divmod(rest, 10)
            words.append(_TENS[tens])
            if ones:
                words.append(_ONES[ones])
    return words


def number_to_words(n: int) -> str:
    """Cardinal number in words: ``1234 -> "one thousand two hundred thirty four"``."""
    n = int(n)
    if n < 0:
        return "minus " + number_to_words(-n)
    if n == 0:
        return "zero"
    if n >= 10**18:  # absurdly long: read the digits
        return digits_to_words(str(n))
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            count, n = divmod(n, value)
            words += number_to_words(count).split() + [name]
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def digits_to_words(digits: str) -> str:
    """Digit by digit: ``"050" -> "zero five zero"``."""
    return " ".join(_ONES[int(d)] for d in digits if d.isdigit())


def ordinal_to_words(n: int) -> str:
    """Ordinal in words: ``21 -> "twenty first"``, ``100 -> "one hundredth"``."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_to_words(n: int) -> str:
    """A year as people say it: 1990 -> nineteen ninety, 1905 -> nineteen oh five,
    1900 -> nineteen hundred, 2000 -> two thousand, 2007 -> two thousand seven, 2019 -> twenty nineteen."""
    if not 1000 <= n <= 9999:
        return number_to_words(n)
    high, low = divmod(n, 100)
    if n % 1000 == 0 or (2000 <= n <= 2009):
        return number_to_words(n)
    if low == 0:
        return number_to_words(high) + " hundred"
    if low < 10:
        return number_to_words(high) + " oh " + _ONES[low]
    return number_to_words(high) + " " + number_to_words(low)


def _pluralize_last(words: str) -> str:
    parts = words.split()
    last = parts[-1]
    if last.endswith("y"):
        parts[-1] = last[:-1] + "ies"
    elif last.endswith(("x", "s")):
        parts[-1] = last + "es"
    else:
        parts[-1] = last + "s"
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# abbreviations and symbols
# --------------------------------------------------------------------------------------------
# Abbreviations followed by a period (matched case-sensitively at a word start).
_ABBREVIATIONS = {
    "Mr": "mister", "Mrs": "missus", "Ms": "miss", "Dr": "doctor", "Prof": "professor",
    "Jr": "junior", "Sr": "senior", "Rev": "reverend", "Hon": "honorable", "Gen": "general",
    "Gov": "governor", "Capt": "captain", "Col": "colonel", "Lt": "lieutenant", "Sgt": "sergeant",
    "Maj": "major", "Cpl": "corporal", "Adm": "admiral", "Mt": "mount", "Ft": "fort",
    "Ave": "avenue", "Blvd": "boulevard", "Rd": "road", "Co": "company", "Ltd": "limited",
    "Inc": "incorporated", "Corp": "corporation", "Dept": "department", "Jan": "january",
    "Feb": "february", "Mar": "march", "Apr": "april", "Aug": "august", "Sept": "september",
    "Sep": "september", "Oct": "october", "Nov": "november", "Dec": "december",
    "vs": "versus", "approx": "approximately", "esp": "especially", "etc": "et cetera",
}
_LATIN_ABBREVIATIONS = [
    (re.compile(r"\be\.g\.(?=\s|,|$)", re.IGNORECASE), "for example"),
    (re.compile(r"\bi\.e\.(?=\s|,|$)", re.IGNORECASE), "that is"),
    (re.compile(r"\ba\.m\.(?=\s|,|$)", re.IGNORECASE), "a m"),
    (re.compile(r"\bp\.m\.(?=\s|,|$)", re.IGNORECASE), "p m"),
]
_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", "sen", "sen"),
}
_SYMBOLS = [
    ("&", " and "), ("%", " percent "), ("@", " at "), ("+", " plus "), ("=", " equals "),
    ("#", " number "), ("°", " degrees "),
]
_QUOTES = {
    "“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "‚": "'", "`": "'",
    "´": "'",
}
_DASHES = {"–": " - ", "—": " - ", "―": " - ", "‐": "-", "‑": "-"}

_NUM = r"\d+(?:,\d{3})*"
_RE_CURRENCY = re.compile(
    rf"([$£€¥])\s?({_NUM})(?:\.(\d+))?(?:\s+(thousand|million|billion|trillion)\b)?"
)
_RE_DECADE = re.compile(r"(?<![\d.,])'?(\d{2}|1\d{3}|20\d{2})'?s\b")
_RE_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_RE_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_RE_DECIMAL = re.compile(rf"(?<![\d.])({_NUM})?\.(\d+)\b")
_RE_NUMBER = re.compile(rf"(?<![\d.]){_NUM}\b")
_RE_NEGATIVE = re.compile(r"(?<![\w\d])-(?=\d)")
_RE_SPACES = re.compile(r"\s+")


def _currency(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    frac = m.group(3)
    scale = m.group(4)
    if scale:  # "$5 million", "$2.5 billion"
        amount = number_to_words(whole) + (f" point {digits_to_words(frac)}" if frac else "")
        return f" {amount} {scale} {many} "
    cents = 0
    if frac:
        if len(frac) <= 2:
            cents = int(frac.ljust(2, "0"))
        else:  # "$1.999": read it as a decimal amount
            return f" {number_to_words(whole)} point {digits_to_words(frac)} {many} "
    parts = []
    if whole or not cents:
        parts.append(f"{number_to_words(whole)} {one if whole == 1 else many}")
    if cents:
        parts.append(f"{number_to_words(cents)} {sub_one if cents == 1 else sub_many}")
    return " " + " and ".join(parts) + " "


def _decade(m: re.Match) -> str:
    digits = m.group(1)
    n = int(digits)
    if len(digits) == 2:  # '80s, 80s
        if n % 10 != 0:
            return m.group(0)
        return _pluralize_last(number_to_words(n))
    return _pluralize_last(year_to_words(n))


def _ordinal(m: re.Match) -> str:
    return ordinal_to_words(int(m.group(1)))


def _time(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes == 0:
        return f"{number_to_words(hours)} o'clock"
    if minutes < 10:
        return f"{number_to_words(hours)} oh {_ONES[minutes]}"
    return f"{number_to_words(hours)} {number_to_words(minutes)}"


def _decimal(m: re.Match) -> str:
    whole = m.group(1)
    words = number_to_words(int(whole.replace(",", ""))) if whole else "zero"
    return f"{words} point {digits_to_words(m.group(2))}"


def _number(m: re.Match) -> str:
    text = m.group(0)
    n = int(text.replace(",", ""))
    if "," not in text and len(text) == 4 and 1100 <= n <= 2099:
        return year_to_words(n)
    if len(text) > 1 and text.startswith("0") and "," not in text:  # "007", zip codes
        return digits_to_words(text)
    return number_to_words(n)


def _street_or_saint(text: str) -> str:
    # "St. John" -> saint (followed by a capitalised word); "Main St." -> street.
    text = re.sub(r"\bSt\.(?=\s+[A-Z])", "saint", text)
    text = re.sub(r"(?<=[A-Za-z] )St\.", "street", text)
    return re.sub(r"\bSt\.", "saint", text)


def _expand_abbreviations(text: str) -> str:
    for pattern, words in _LATIN_ABBREVIATIONS:
        text = pattern.sub(words, text)
    text = _street_or_saint(text)
    text = re.sub(r"\bNo\.(?=\s*\d)", "number", text)
    text = re.sub(r"\bno\.(?=\s*\d)", "number", text)

    def repl(m: re.Match) -> str:
        return _ABBREVIATIONS[m.group(1)]

    pattern = r"\b(" + "|".join(sorted(map(re.escape, _ABBREVIATIONS), key=len, reverse=True)) + r")\."
    text = re.sub(pattern, repl, text)
    return text


# --------------------------------------------------------------------------------------------
# checks and cleanup
# --------------------------------------------------------------------------------------------
def check_not_empty(text: str, what: str = "text") -> None:
    if text is None or not str(text).strip():
        raise DmttsError(f"{what} is empty: give a non-empty sentence to synthesize")


def check_latin_script(text: str, what: str = "text") -> None:
    """Raise DmttsError if ``text`` contains letters from a non-Latin script."""
    bad = []
    for ch in text:
        if unicodedata.category(ch).startswith("L"):
            name = unicodedata.name(ch, "")
            if "LATIN" not in name:
                bad.append(ch)
    if bad:
        sample = "".join(dict.fromkeys(bad))[:10]
        raise DmttsError(
            f"{what} contains non-Latin characters ({sample!r}): the English phoneme front-end only "
            "handles Latin-script English; for other languages train a BPE front-end on that language's "
            "transcripts ('dmtts text train-bpe --cuts ... --vocab-size N --out DIR') and set the TTS "
            "config's text front-end to 'bpe'"
        )


def basic_cleanup(text: str) -> str:
    """Language-independent cleanup: Unicode NFKC, typographic quotes and dashes, whitespace."""
    text = unicodedata.normalize("NFKC", text)
    for src, dst in _QUOTES.items():
        text = text.replace(src, dst)
    for src, dst in _DASHES.items():
        text = text.replace(src, dst)
    text = text.replace("…", "...")
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)  # control chars
    return _RE_SPACES.sub(" ", text).strip()


def _punctuation_cleanup(text: str) -> str:
    text = re.sub(r"\.{3,}", "…", text)  # ellipsis: one symbol for espeak
    text = re.sub(r"[\[\]{}<>]", ",", text)  # brackets -> pauses
    text = re.sub(r"[\\/|_~^*]", " ", text)
    text = re.sub(r"\s+([,.;:!?…)])", r"\1", text)  # no space before punctuation
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # ",," -> ","
    text = re.sub(r"([!?])\1+", r"\1", text)  # "!!!" -> "!"
    text = re.sub(r"^[\s,;:.]+", "", text)  # leading punctuation
    text = re.sub(r"\(\s*\)", "", text)
    text = re.sub(r"\s+-\s+", ", ", text)  # spaced dash -> pause
    return _RE_SPACES.sub(" ", text).strip()


def normalize_english(text: str) -> str:
    """Normalise English ``text`` for espeak-ng (see the module docstring for examples).

    Raises DmttsError for empty text or text in a non-Latin script.
    """
    check_not_empty(text)
    text = basic_cleanup(text)
    check_latin_script(text)
    ends_sentence = text.endswith(".")
    text = _expand_abbreviations(text)
    text = _RE_CURRENCY.sub(_currency, text)
    text = _RE_TIME.sub(_time, text)
    text = _RE_DECADE.sub(_decade, text)
    text = _RE_ORDINAL.sub(_ordinal, text)
    text = _RE_NEGATIVE.sub("minus ", text)
    text = _RE_DECIMAL.sub(_decimal, text)
    text = _RE_NUMBER.sub(_number, text)
    for src, dst in _SYMBOLS:
        text = text.replace(src, dst)
    text = _punctuation_cleanup(text)
    if ends_sentence and text and text[-1] not in ".!?…":  # "... the Dr." lost its full stop
        text += "."
    check_not_empty(text, "text after normalisation")
    return text


# --------------------------------------------------------------------------------------------
# sentence splitting (long-form synthesis)
# --------------------------------------------------------------------------------------------
# A full stop after one of these words does not end a sentence ("Dr. Smith", "e.g. apples").
_NON_FINAL_ABBREVIATIONS = {a.lower() for a in _ABBREVIATIONS if a not in ("etc", "Inc", "Ltd", "Co", "Corp")} | {
    "st", "e.g", "i.e", "cf", "vol", "fig", "ch", "pp",
}
# Sentence end: terminal punctuation, optional closing quotes/brackets, whitespace.
_RE_SENTENCE_END = re.compile(r"([.!?…]+[\"')\]]*)\s+")
_RE_CLAUSE_END = re.compile(r"[,;:]\s+")


def _ends_with_abbreviation(chunk: str, following: str = "") -> bool:
    """True when the full stop closing ``chunk`` belongs to an abbreviation or an initial."""
    if not chunk.endswith("."):
        return False
    last = chunk.rsplit(None, 1)[-1].lstrip("\"'([").rstrip(".")
    if not last:
        return False
    if last.lower() in _NON_FINAL_ABBREVIATIONS:
        return True
    if last.lower() == "no" and following[:1].isdigit():  # "No. 7", but "No. It was."
        return True
    return len(last) == 1 and last.isalpha() and last.isupper()  # an initial: "J. R. R. Tolkien"


def split_sentences(text: str, max_words: int = 40, min_words: int = 3) -> list[str]:
    """Split ``text`` into sentences for long-form synthesis, keeping each one speakable alone.

    A sentence ends at ``. ! ? …`` (closing quotes/brackets included) followed by whitespace,
    except after abbreviations and initials ("Dr. Smith", "e.g. This", "J. Smith") or before a
    lower-case word ("at 5 p.m. today"); decimals
    ("3.50") have no space after the point and never split. Newlines separate paragraphs and
    always end a sentence. A sentence of more than ``max_words`` words is cut at the clause
    punctuation (``, ; :``) nearest its middle, else at ``max_words`` words, because the TTS
    models were trained on utterances of at most ~15 s. A piece of fewer than ``min_words``
    words is merged into its neighbour when the result stays within ``max_words``.
    """
    pieces: list[str] = []
    for paragraph in re.split(r"\s*[\r\n]+\s*", text):
        paragraph = basic_cleanup(paragraph)
        if not paragraph or not any(ch.isalnum() for ch in paragraph):
            continue
        start, current = 0, ""
        for m in _RE_SENTENCE_END.finditer(paragraph):
            chunk = paragraph[start : m.end(1)]
            current = f"{current} {chunk}".strip() if current else chunk
            start = m.end()
            # a lower-case word next continues the sentence ("at 5 p.m. today", "etc. and")
            following = paragraph[start : start + 1]
            if not _ends_with_abbreviation(chunk, following) and not following.islower():
                pieces.append(current)
                current = ""
        tail = paragraph[start:].strip()
        current = f"{current} {tail}".strip() if current else tail
        if current:
            pieces.append(current)
    out: list[str] = []
    for sentence in pieces:
        out.extend(_split_long(sentence, max_words))
    return _merge_short(out, min_words, max_words)


def split_in_two(sentence: str, min_words: int = 3) -> list[str]:
    """Cut a sentence in two at the clause mark (``, ; :``) nearest its middle, else at its middle
    word; ``[sentence]`` when a half would have fewer than ``min_words`` words."""
    words = sentence.split()
    if len(words) < 2 * min_words:
        return [sentence]
    middle = len(sentence) / 2
    cuts = [m.end() for m in _RE_CLAUSE_END.finditer(sentence)]
    cuts = [c for c in cuts if min_words <= len(sentence[:c].split()) <= len(words) - min_words]
    if cuts:
        cut = min(cuts, key=lambda c: abs(c - middle))
        return [sentence[:cut].strip(), sentence[cut:].strip()]
    half = len(words) // 2
    return [" ".join(words[:half]), " ".join(words[half:])]


def _split_long(sentence: str, max_words: int) -> list[str]:
    words = sentence.split()
    if len(words) <= max_words:
        return [sentence]
    parts = split_in_two(sentence)
    if parts == [sentence]:  # no clause mark in reach: cut at the word limit
        parts = [" ".join(words[:max_words]), " ".join(words[max_words:])]
    elif not _RE_CLAUSE_END.search(parts[0][-2:] + " "):  # cut at the middle word: prefer the limit
        parts = [" ".join(words[:max_words]), " ".join(words[max_words:])]
    return [p for part in parts for p in _split_long(part, max_words)]


def _merge_short(pieces: list[str], min_words: int, max_words: int) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        n = len(piece.split())
        if out and (n < min_words or len(out[-1].split()) < min_words) and len(out[-1].split()) + n <= max_words:
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out
