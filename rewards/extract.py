r"""Pull the final answer out of a completion, and the gold answer out of a data set's answer field.

`final_answer` tries, in order, the last `<answer>...</answer>`, the last `\boxed{...}` / `\fbox{...}`
(nested braces), "the final answer is X", GSM8K's `#### X` and the `A: X` line:

    final_answer(r"so x = 2, hence \boxed{\frac{1}{2}}. Done")  == r"\frac{1}{2}"
    final_answer("... = 18\nA: 18")                            == "18"

`gold_answers` reads the answer fields of the data sets in ../shared/data: a plain value ("18", "27.0",
"\dfrac{7}{20}"), a GSM8K worked solution ending in "#### 18", a solution with the answer in
`\boxed{}` (Minerva), or a list rendered as a string ("['$2$', '$3$']", OlympiadBench).
"""

from __future__ import annotations

import ast
import re

_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")
_FINAL_RE = re.compile(r"final answer is[:\s]*(.+?)(?:\.\s|\.?$|\n|I hope)", re.IGNORECASE | re.MULTILINE)
_HASH_RE = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_A_LINE_RE = re.compile(r"^\s*A:\s*(.+?)\s*$", re.MULTILINE)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` (braces balanced), or of `\\boxed 5`."""
    matches = list(_BOX_RE.finditer(text))
    for m in reversed(matches):
        if m.group(1) is None:  # "\boxed 5": up to the next space or `$`
            rest = re.match(r"([^\s$]+)", text[m.end() :])
            if rest:
                return rest.group(1)
            continue
        depth, start = 1, m.end()
        for i in range(start, len(text)):
            c = text[i]
            if c == "{" and text[i - 1] != "\\":
                depth += 1
            elif c == "}" and text[i - 1] != "\\":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
        # unbalanced (truncated) box: try an earlier one
    return None


def final_answer(text: str) -> str | None:
    """The completion's final answer by the first marker found, or None when it has none."""
    tags = _TAG_RE.findall(text)
    if tags:
        inner = tags[-1]
        return last_boxed(inner) or inner.strip()
    for find in (last_boxed, _last_match(_FINAL_RE), _last_match(_HASH_RE), _last_match(_A_LINE_RE)):
        found = find(text)
        if found:
            return found
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
        boxed = last_boxed(answer)
        if boxed:
            return [boxed]
    return [answer]
