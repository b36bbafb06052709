r"""Pull the final answer out of a completion, and the gold answer out of a data set's answer field.

`final_answer` tries, in order, the last `<answer>...</answer>`, the last `\boxed{...}` / `\fbox{...}`
(nested braces; together with the boxes right before it when only separators lie between them, so
`\boxed{2} and \boxed{3}` is "2, 3"; a "the final answer is X" after the last box wins over it),
"the final answer is X", GSM8K's `#### X` and the `A: X` line:

    final_answer(r"so x = 2, hence \boxed{\frac{1}{2}}. Done")  == r"\frac{1}{2}"
    final_answer("... = 18\nA: 18")                            == "18"

`gold_answers` reads the answer fields of the data sets in ../shared/data: a plain value ("18", "27.0",
"\dfrac{7}{20}"), a GSM8K worked solution ending in "#### 18", a solution with the answer in
`\boxed{}` (Minerva; several adjacent boxes are one answer there too), or a list rendered as a string ("['$2$', '$3$']", OlympiadBench).
"""

from __future__ import annotations

import ast
import re

_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")
_FINAL_RE = re.compile(r"final answer is[:\s]*(.+?)(?:\.\s|\.?$|\n|I hope)", re.IGNORECASE | re.MULTILINE)
# "... \boxed{5}. I am sure the final answer is correct.": a verdict on the box, not a new answer.
_NOT_AN_ANSWER_RE = re.compile(r"(?:correct|incorrect|right|wrong|valid|as (?:follows|above)|above|below)\b", re.IGNORECASE)
_HASH_RE = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_A_LINE_RE = re.compile(r"^\s*A:\s*(.+?)\s*$", re.MULTILINE)
# What may sit between two boxes of one answer: spacing, punctuation, math delimiters, "and"/"or"
# (bare or in \text{}), and a short "x =" naming the next value ("$x = \boxed{2}$ or $x = \boxed{3}$").
_SEPARATOR_RE = re.compile(
    r"(?:\s|[,;.&$]|\\\\|\\[,;:!& ]|\\q?quad\b|\\[\[\]()]|\\hspace\*?\{[^{}]*\}|\b(?:and|or)\b"
    r"|\\(?:text|textrm|textnormal|textbf|textit|mathrm|mbox)\s*\{\s*(?:and|or|,|;)?\s*\}"
    r"|(?:\\[A-Za-z]+|[A-Za-z])(?:_\{?\w+\}?)?\s*=)*",
    re.IGNORECASE,
)


def boxes(text: str) -> list[tuple[int, int, str]]:
    """Every complete `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` as (start, end, content), in order.

    A box left unbalanced (a truncated completion) is skipped, as are boxes nested inside another.
    """
    found: list[tuple[int, int, str]] = []
    for m in _BOX_RE.finditer(text):
        if found and m.start() < found[-1][1]:
            continue  # inside the previous box
        if m.group(1) is None:  # "\boxed 5": up to the next space or `$`
            rest = re.match(r"([^\s$]+)", text[m.end() :])
            if rest:
                found.append((m.start(), m.end() + rest.end(), rest.group(1)))
            continue
        depth, start = 1, m.end()
        for i in range(start, len(text)):
            c = text[i]
            if c == "{" and text[i - 1] != "\\":
                depth += 1
            elif c == "}" and text[i - 1] != "\\":
                depth -= 1
                if depth == 0:
                    found.append((m.start(), i + 1, text[start:i].strip()))
                    break
    return found


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` or `\\fbox{...}` (braces balanced), or of `\\boxed 5`."""
    found = boxes(text)
    return found[-1][2] if found else None


def boxed_answer(text: str) -> str | None:
    r"""The last box, joined with the boxes right before it when only separators lie between them.

    `\boxed{(3,4)}, \boxed{(4,3)}` and `\boxed{a=7} \quad\text{and}\quad \boxed{b=-1}` are one answer
    spread over several boxes: it is returned as their contents joined by ", " (which math-verify
    reads as a set, as it does its own "\boxed{1} and \boxed{2}"). Boxes separated by anything more
    (`\boxed{1}, but wait, ... \boxed{2}`) are successive attempts: only the last counts. Repeated
    contents count once (`\boxed{5}. \boxed{5}` is 5).
    """
    found = boxes(text)
    if not found:
        return None
    run = [found[-1]]
    for box in reversed(found[:-1]):
        if not _SEPARATOR_RE.fullmatch(text[box[1] : run[0][0]]):
            break
        run.insert(0, box)
    contents = list(dict.fromkeys(content for _, _, content in run if content))
    return ", ".join(contents) if contents else run[-1][2]


def final_answer(text: str) -> str | None:
    """The completion's final answer by the first marker found, or None when it has none.

    An explicit "the final answer is X" after the last box wins over the box: the model revised it.
    """
    tags = _TAG_RE.findall(text)
    if tags:
        inner = tags[-1]
        return boxed_answer(inner) or inner.strip()
    found = boxes(text)
    if found:
        statements = [m.group(1).strip() for m in _FINAL_RE.finditer(text, found[-1][1])]
        statements = [st for st in statements if st and not _NOT_AN_ANSWER_RE.match(st)]
        if statements:
            return statements[-1]
        return boxed_answer(text)
    for find in (_last_match(_FINAL_RE), _last_match(_HASH_RE), _last_match(_A_LINE_RE)):
        found_text = find(text)
        if found_text:
            return found_text
    return None


def _last_match(pattern: re.Pattern[str]):
    def find(text: str) -> str | None:
        matches = pattern.findall(text)
        return matches[-1].strip() if matches else None

    return find


def gold_answers(answer: str) -> list[str]:
    """The gold answer(s) in a data set's answer field (several when it is a list)."""
    answer = str(answer).strip()
    if answer.startswith("[") and answer.endswith("]"):
        try:
            items = ast.literal_eval(answer)
        except (ValueError, SyntaxError):
            items = None
        if isinstance(items, list) and items and all(isinstance(item, str) for item in items):
            return [item.strip() for item in items]  # "[1,9]" stays an interval: its items are not strings
    hashed = _HASH_RE.findall(answer)
    if hashed:
        return [hashed[-1].strip()]
    if "\\boxed" in answer or "\\fbox" in answer:
        boxed = boxed_answer(answer)
        if boxed:
            return [boxed]
    return [answer]
