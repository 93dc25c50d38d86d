"""Spoken arithmetic for the Lite profile: "What is two plus two?" answered by a calculator, not by the LLM.

SmolLM2-135M cannot add: asked "What is two plus two?" it answered "2." or "Two and two is a double meaning." A
person who asks a voice assistant a sum expects the right number, so a question that is nothing but arithmetic is
answered here, exactly (``fractions.Fraction``), and the answer goes into the conversation's history like any other.
Anything else (a question with words the grammar does not know, "what is the capital of two", a bare number) is
left to the LLM: :func:`answer` returns None.

What it understands, as Whisper writes it (digits or words, symbols or words):

- a question frame: "what is / what's / how much is / what does ... equal / calculate / work out / tell me what
  ... is", after any leading interjections or whole sentences ("Stop. What is ...", "Okay, so what's ...");
- numbers: digits ("1,250", "3.5", "-4") or words up to the billions ("two hundred and five", "three point five",
  "a thousand", "negative four");
- plus / add, minus / take away / subtract, times / multiplied by / x, divided by / over, "squared", "cubed",
  "the square root of", "N percent of", "A and B added together", "add A and/to B", "subtract A from B",
  "multiply A by B", "divide A by B", with the usual precedence (times and divided by before plus and minus).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["answer", "parse"]

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_UNITS["oh"] = 0
# words Whisper writes for a number it heard right but spelled as its homophone ("What is 2 plus to?"); read as
# numbers only where a number must stand (next to an operator), so "add 3 to 4" keeps its "to"
_HOMOPHONES = {"to": "two", "too": "two", "for": "four", "fore": "four", "won": "one", "ate": "eight",
               "tree": "three", "free": "three", "nein": "nine", "tin": "ten"}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9}

# operators, longest phrases first; each maps to a symbol of the grammar below
_PHRASES = [
    ("multiplied by", "*"), ("times by", "*"), ("times", "*"), ("x", "*"), ("×", "*"), ("*", "*"),
    ("divided by", "/"), ("over", "/"), ("÷", "/"), ("/", "/"),
    ("plus", "+"), ("+", "+"),
    ("minus", "-"), ("take away", "-"), ("-", "-"), ("−", "-"),
    ("squared", "^2"), ("cubed", "^3"), ("to the power of", "^"),
    ("the square root of", "sqrt"), ("square root of", "sqrt"),
    ("percent of", "%of"), ("per cent of", "%of"), ("% of", "%of"),
]
_SPOKEN = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}

_INTERJECTIONS = {"stop", "wait", "okay", "ok", "so", "and", "hey", "um", "uh", "er", "erm", "well", "now",
                  "then", "sorry", "hmm", "oh", "please", "actually", "alright", "also", "right"}
# how a question about a sum begins (after the interjections); a bare "two plus two?" needs none
_FRAMES = [
    r"(?:(?:can|could|would) you (?:please )?)?(?:tell me |say )?what(?:'s| is| are| would be| will be| does| do)?",
    r"how much (?:is|are|would be|does|do)", r"what is the (?:answer|result) (?:to|of)",
    r"(?:(?:can|could|would) you (?:please )?)?(?:calculate|compute|work out|solve|figure out)",
]
_ENDINGS = r"(?:\s+(?:is|are|equals?|make|makes|come to|comes to|give|gives|please|then|exactly))*"
_MAX_TERMS = 12
_MAX_MAGNITUDE = Fraction(10) ** 15


class _Unparsed(Exception):
    pass


def answer(text: str) -> str | None:
    """The spoken answer to ``text`` if it asks for a sum and nothing else ("2 plus 2 is 4."), else None."""
    parsed = parse(text)
    if parsed is None:
        return None
    spoken, value = parsed
    if value is None:
        return "Dividing by zero has no answer."
    if abs(value) >= _MAX_MAGNITUDE:
        return f"{_capital(spoken)} is a number too large to say."
    return f"{_capital(spoken)} is {_format(value)}."


def parse(text: str) -> tuple[str, Fraction | float | None] | None:
    """``(the expression as spoken, its value)`` for a question that is only arithmetic; the value is None for a
    division by zero; None when ``text`` is not such a question."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]
    if not sentences:
        return None
    body = _strip_frame(_normalise(sentences[-1]))   # "Stop. What is 2 plus 2?": the question is the last sentence
    if body is None:
        return None
    try:
        tokens = _tokens(body)
        if not any(t[0] == "op" for t in tokens):
            return None      # a bare number is not a sum
        return _Parser(tokens).run()
    except (_Unparsed, ValueError, OverflowError, ZeroDivisionError):
        return None


def _normalise(sentence: str) -> str:
    s = sentence.lower().replace("’", "'")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)                 # 1,250 -> 1250
    s = re.sub(r"[?!.,;:\"]+(?=\s|$)", " ", s)                # punctuation, not a decimal point
    s = re.sub(r"(?<=\d)\s*([x×*/÷+=−])\s*(?=[\d-])", r" \1 ", s)   # 2x3, 2+2, 2=
    s = re.sub(r"(?<=\d)\s*-\s*(?=\d)", " - ", s)            # 7-3 is a subtraction
    s = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", s)               # twenty-five
    s = s.replace("%", " % ").replace("=", " equals ")
    return re.sub(r"\s+", " ", s).strip()


def _strip_frame(s: str) -> str | None:
    words = s.split()
    while words and words[0] in _INTERJECTIONS:
        words.pop(0)
    s = " ".join(words)
    if not s:
        return None
    # verbs that carry the operation: "add 3 and 4", "subtract 2 from 9", "multiply 6 by 7", "divide 8 by 2"
    m = re.fullmatch(rf"(?:(?:can|could|would) you (?:please )?|please )?(add|subtract|multiply|divide) (.+?) "
                     rf"(and|to|from|by) (.+?){_ENDINGS}", s)
    if m:
        verb, a, link, b = m.groups()
        ops = {("add", "and"): f"{a} plus {b}", ("add", "to"): f"{b} plus {a}",
               ("subtract", "from"): f"{b} minus {a}", ("multiply", "by"): f"{a} times {b}",
               ("multiply", "and"): f"{a} times {b}", ("divide", "by"): f"{a} divided by {b}"}
        return ops.get((verb, link))
    for frame in _FRAMES:
        m = re.fullmatch(rf"{frame}\s*(.+?){_ENDINGS}", s)
        if m:
            return m.group(1)
    return re.sub(rf"{_ENDINGS}$", "", s)


def _tokens(body: str) -> list[tuple]:
    """("num", Fraction, spoken) and ("op", symbol) tokens; raises _Unparsed at a word it does not know."""
    body = re.sub(r"^(.+?) and (.+?) (?:added together|together)$", r"\1 plus \2", body)
    body = re.sub(r"^(?:the )?(sum|product) of (.+?) and (.+)$",
                  lambda m: f"{m.group(2)} {'plus' if m.group(1) == 'sum' else 'times'} {m.group(3)}", body)
    words = body.split()
    out: list[tuple] = []
    i = 0
    while i < len(words):
        sym, n = _phrase_at(words, i)
        if sym is not None and not (sym == "-" and (not out or out[-1][0] == "op")):   # else a sign
            out.append(("op", sym))
            i += n
            continue
        j, value, spoken = _number(words, i)
        if j == i and words[i] in _HOMOPHONES and (out and out[-1][0] == "op" or _phrase_at(words, i + 1)[0]):
            j, value, spoken = _number(words[:i] + [_HOMOPHONES[words[i]]], i)
        if j == i:
            raise _Unparsed(words[i])
        if j < len(words) and words[j] in ("percent", "%") and (j + 1 == len(words) or words[j + 1] != "of"):
            value, spoken, j = value / 100, f"{spoken} percent", j + 1
        out.append(("num", value, spoken))
        i = j
        if len(out) > 2 * _MAX_TERMS:
            raise _Unparsed("too long")
    return out


def _phrase_at(words: list[str], i: int) -> tuple[str | None, int]:
    for phrase, sym in _PHRASES:
        n = len(phrase.split())
        if " ".join(words[i:i + n]) == phrase:
            return sym, n
    return None, 0


def _number(words: list[str], i: int) -> tuple[int, Fraction, str]:
    """Read a number at ``words[i]``: ``(index after it, value, as spoken)``; ``(i, 0, "")`` when there is none."""
    sign, k = 1, i
    if k < len(words) and words[k] in ("minus", "negative", "-", "−"):
        sign, k = -1, k + 1
    if k < len(words) and re.fullmatch(r"-?\d+(?:\.\d+)?", words[k]):
        value = Fraction(words[k]) * sign
        return k + 1, value, _format(value)
    total, current, last = 0, 0, ""          # last: the kind of the previous number word
    while k < len(words):
        w, nxt = words[k], (words[k + 1] if k + 1 < len(words) else "")
        if w in _UNITS and last in ("", "tens", "hundred", "scale") and not (last == "tens" and _UNITS[w] >= 10):
            current, last = current + _UNITS[w], "unit"
        elif w in _TENS and last in ("", "hundred", "scale"):
            current, last = current + _TENS[w], "tens"
        elif w == "hundred" and last in ("unit", "tens", "a") and current % 100 == current:
            current, last = max(current, 1) * 100, "hundred"
        elif w in _SCALES and last in ("unit", "tens", "hundred", "a"):
            total, current, last = total + max(current, 1) * _SCALES[w], 0, "scale"
        elif w == "a" and last == "" and (nxt == "hundred" or nxt in _SCALES):
            last = "a"
        elif w == "and" and last in ("hundred", "scale") and (nxt in _UNITS or nxt in _TENS):
            pass
        else:
            break
        k += 1
    if last in ("", "a"):
        return i, Fraction(0), ""
    value = Fraction(total + current)
    if k + 1 < len(words) and words[k] == "point" and words[k + 1] in _UNITS and _UNITS[words[k + 1]] < 10:
        digits = ""
        k += 1
        while k < len(words) and words[k] in _UNITS and _UNITS[words[k]] < 10:
            digits += str(_UNITS[words[k]])
            k += 1
        value += Fraction(int(digits), 10 ** len(digits))
    value *= sign
    return k, value, _format(value)


class _Parser:
    """expr := term (("+" | "-") term)* ; term := factor (("*" | "/" | "%of") factor)* ;
    factor := "sqrt" factor | number ["^2" | "^3" | "^" number]"""

    def __init__(self, tokens: list[tuple]) -> None:
        self.tokens, self.i, self.zero_division = tokens, 0, False

    def run(self) -> tuple[str, Fraction | float | None]:
        spoken, value = self.expr()
        if self.i != len(self.tokens):
            raise _Unparsed("trailing words")
        return spoken, (None if self.zero_division else value)

    def peek(self) -> tuple | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expr(self) -> tuple[str, Fraction | float]:
        spoken, value = self.term()
        while (t := self.peek()) in (("op", "+"), ("op", "-")):
            self.i += 1
            s2, v2 = self.term()
            spoken, value = f"{spoken} {_SPOKEN[t[1]]} {s2}", (value + v2 if t[1] == "+" else value - v2)
        return spoken, value

    def term(self) -> tuple[str, Fraction | float]:
        spoken, value = self.factor()
        while (t := self.peek()) is not None and t[0] == "op" and t[1] in ("*", "/", "%of"):
            self.i += 1
            s2, v2 = self.factor()
            if t[1] == "*":
                spoken, value = f"{spoken} times {s2}", value * v2
            elif t[1] == "%of":
                spoken, value = f"{spoken} percent of {s2}", value * v2 / 100
            else:
                spoken = f"{spoken} divided by {s2}"
                if v2 == 0:
                    self.zero_division, value = True, Fraction(0)
                else:
                    value = value / v2
        return spoken, value

    def factor(self) -> tuple[str, Fraction | float]:
        t = self.peek()
        if t == ("op", "sqrt"):
            self.i += 1
            spoken, value = self.factor()
            if value < 0:
                raise _Unparsed("square root of a negative number")
            root = math.isqrt(value.numerator) if isinstance(value, Fraction) and value.denominator == 1 else None
            exact = root is not None and root * root == value
            return f"the square root of {spoken}", (Fraction(root) if exact else math.sqrt(value))
        if t is None or t[0] != "num":
            raise _Unparsed("a number was expected")
        self.i += 1
        spoken, value = t[2], t[1]
        t = self.peek()
        if t in (("op", "^2"), ("op", "^3")):
            self.i += 1
            n = int(t[1][1])
            return f"{spoken} {'squared' if n == 2 else 'cubed'}", value ** n
        if t == ("op", "^"):
            self.i += 1
            nxt = self.peek()
            if nxt is None or nxt[0] != "num" or nxt[1].denominator != 1 or not 0 <= nxt[1] <= 64:
                raise _Unparsed("a small whole power was expected")
            self.i += 1
            if self.i < len(self.tokens) and self.tokens[self.i] == ("op", "^"):
                raise _Unparsed("a tower of powers")
            return f"{spoken} to the power of {nxt[2]}", value ** int(nxt[1])
        return spoken, value


def _format(value: Fraction | float) -> str:
    """A number as it is said: whole numbers plainly, others to at most four decimals ("about" when rounded)."""
    if value < 0:
        return f"negative {_format(-value)}"
    if isinstance(value, Fraction) and value.denominator == 1:
        return str(value.numerator)
    f = float(value)
    rounded = round(f, 4)
    text = f"{rounded:.4f}".rstrip("0").rstrip(".")      # value >= 0 here: never "-0" nor ""
    exact = isinstance(value, Fraction) and Fraction(text) == value
    return text if exact else f"about {text}"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
