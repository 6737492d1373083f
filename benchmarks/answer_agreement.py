"""Answer extraction on real LLM rationales: our strict and flexible answers against what each
rationale states, against the gold answer, and against lm-evaluation-harness's gsm8k filters.

Two recorded corpora of real model output, read from `../shared/data`:
  - teacher_samples/gsm8k_llm_rationales.json: 1,055 GSM8K test rationales ending "The answer is N.";
  - svamp_reft/train_nl.json: 3,076 SVAMP train rationales ending "Therefore, the answer is <N>.".
"Stated" is what the rationale's final statement says, read independently of our extractor: the
number right after the LAST "answer is" (with an optional "$" or "<"), except for the statements
whose sentence that naive reading cannot read (several numbers, "$9 500", "29/3", "unknown"), which
were read by hand and are listed in `READ_BY_HAND` with the fragment they were read from (a row
whose fragment is missing stops the script: the labels belong to this file). A statement that names
no single number ("110 tomatoes and 32 eggplants") is stated as None, and so is a rationale without
a final statement. lm-eval's flexible-extract and strict-match filters are imported from lm-eval when
it is installed (`pip install lm-eval==0.4.13`), else their regexes are applied with the same rules.
Last, the teacher samples' final statements are rewritten in the other final-answer forms models
write ("A: N", "\\boxed{N}", "#### N", ...) and strict extraction is measured on each.

    python benchmarks/answer_agreement.py [--list]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"  # lm-eval gsm8k's flexible-extract (group_select -1)
STRICT = r"#### (\-?[0-9\.\,]+)"  # lm-eval gsm8k's strict-match (first match)
_STATED = re.compile(r"answer is:?\s*[$<]?\s*(-?[0-9][0-9.,]*)", re.IGNORECASE)


# teacher_samples row index -> (fragment of its final statement, the answer it states, read by hand).
READ_BY_HAND: dict[int, tuple[str, str | None]] = {
    105: ("The answer is 110 tomatoes and 32 eggplants.", None),
    114: ("The answer is 4 blue shoeboxes and 3 red shoeboxes.", None),
    146: ("The answer is 4 + 16 + 20 = 40.", "40"),
    193: ("The answer is 29/3.", "29/3"),
    371: ("The answer is 3 onions and 1 potato.", None),
    622: ("the answer is 5 arms and 3 legs, or 8 limbs in total.", "8"),
    623: ("The answer is 6 pieces, or 6 * 2.5 = 15 ounces.", "15"),
    637: ("The answer is $118 000.", "118000"),
    830: ("The answer is $9 500.", "9500"),
    853: ("The answer is 84 sofas and 88 chairs.", None),
    879: ("The answer is 60 dishes and 60 socks.", None),
    900: ("The answer is 18 + x hours.", None),  # an expression with a variable, not a number
    934: ("The answer is unknown", None),
    1014: ("The answer is 220 + 90 + 60 = 370.", "370"),
    1018: ("The answer is 2 or 3.", None),
    1041: ("The answer is 86 glasses and 42 plates.", None),
    1049: ("The answer is 40 - 29 = 11 holes.", "11"),
}


def naive_stated(text: str) -> str | None:
    """The number after the last "answer is", trailing "." and "," removed; None if there is none."""
    found = _STATED.findall(text)
    return found[-1].rstrip(".,").replace(",", "") if found else None


def stated_answers(name: str, texts: list[str]) -> list[str | None]:
    """The stated answer of each text: the hand reading where there is one, else the naive reading."""
    if not name.startswith("teacher_samples"):
        return [naive_stated(text) for text in texts]
    stated = []
    for index, text in enumerate(texts):
        if index in READ_BY_HAND:
            fragment, answer = READ_BY_HAND[index]
            if fragment not in text:
                raise SystemExit(f"row {index} does not hold {fragment!r}: these labels are for another file")
            stated.append(answer)
        else:
            stated.append(naive_stated(text))
    return stated


def lm_eval_filters():
    """(flexible, strict) as functions text -> answer; lm-eval's own RegexFilter when importable."""
    try:
        from lm_eval.filters.extraction import RegexFilter
    except ImportError:
        RegexFilter = None  # noqa: N806 - the fallback below mirrors its rules
    if RegexFilter is not None:
        flexible = RegexFilter(FLEXIBLE, group_select=-1)
        strict = RegexFilter(STRICT, group_select=0)
        return (
            lambda text: flexible.apply([[text]], None)[0][0],
            lambda text: strict.apply([[text]], None)[0][0],
            "lm-eval 0.4.13 RegexFilter",
        )

    def apply(pattern: str, select: int):
        def run(text: str) -> str:
            matches = re.findall(pattern, text)
            if not matches:
                return "[invalid]"
            match = matches[select]
            if isinstance(match, tuple):
                match = next((group for group in match if group), "[invalid]")
            return match.strip()

        return run

    return apply(FLEXIBLE, -1), apply(STRICT, 0), "a copy of lm-eval's regexes (lm-eval not installed)"


def same(a: str | None, b: str | None) -> bool:
    from scalingdown.data.answers import parse_number

    value_a = None if a in (None, "[invalid]") else parse_number(a.replace("$", "").replace(",", ""))
    value_b = None if b in (None, "[invalid]") else parse_number(b.replace("$", "").replace(",", ""))
    return value_a == value_b


def corpora() -> dict[str, list[tuple[str, str]]]:
    """name -> [(output text, gold answer)] for each corpus present."""
    found = {}
    samples = DATA / "teacher_samples" / "gsm8k_llm_rationales.json"
    if samples.exists():
        found["teacher_samples (GSM8K test)"] = [
            (row["output"], row["answer"]) for row in json.loads(samples.read_text())
        ]
    svamp = DATA / "svamp_reft" / "train_nl.json"
    if svamp.exists():
        found["svamp_reft prose (SVAMP train)"] = [
            (row["answer_cot"], row["answer_value"]) for row in json.loads(svamp.read_text())
        ]
    return found


def measure(name: str, rows: list[tuple[str, str]], show: bool) -> None:
    from scalingdown.data.answers import answers_match, extract_numeric

    flexible_regex, strict_regex, source = lm_eval_filters()
    n = len(rows)
    stated_all = stated_answers(name, [text for text, _ in rows])
    counts = dict.fromkeys(
        ("numeric", "strict_is_stated", "flexible_is_stated", "lm_flexible_is_stated", "strict_found",
         "strict_gold", "flexible_gold", "lm_flexible_gold", "lm_strict_found", "flexible_is_lm_flexible"),
        0,
    )  # fmt: skip
    differ: list[str] = []
    versus: list[str] = []
    for (text, gold), stated in zip(rows, stated_all, strict=True):
        strict, flexible = extract_numeric(text, strict=True), extract_numeric(text, strict=False)
        theirs, theirs_strict = flexible_regex(text), strict_regex(text)
        counts["strict_found"] += strict is not None
        counts["strict_gold"] += answers_match(strict, gold, choice=False)
        counts["flexible_gold"] += answers_match(flexible, gold, choice=False)
        counts["lm_flexible_gold"] += same(theirs, gold)
        counts["lm_strict_found"] += theirs_strict != "[invalid]"
        counts["flexible_is_lm_flexible"] += same(theirs, flexible)
        if not same(theirs, flexible):
            versus.append(f"lm-eval {theirs!r} vs ours {flexible!r}: ...{text.strip()[-90:]!r}")
        # Strict must say nothing where nothing single is stated; flexible guesses there by design.
        counts["strict_is_stated"] += same(strict, stated)
        if stated is not None:
            counts["numeric"] += 1
            counts["flexible_is_stated"] += same(flexible, stated)
            counts["lm_flexible_is_stated"] += same(theirs, stated)
        if not same(strict, stated) or (stated is not None and not same(flexible, stated)):
            differ.append(
                f"stated {stated!r}, strict {strict!r}, flexible {flexible!r}, lm-eval {theirs!r}: "
                f"...{text.strip()[-110:]!r}"
            )
    numeric = counts["numeric"]

    def pct(count: int, of: int) -> str:
        return f"{count:,}/{of:,} = {100 * count / of:.1f}%" if of else "-"

    print(f"\n{name}: {n:,} rationales, {numeric:,} state one number; lm-eval filters: {source}")
    print(f"  ours strict   == stated (None where none is): {pct(counts['strict_is_stated'], n)}")
    print(f"  ours flexible == stated number: {pct(counts['flexible_is_stated'], numeric)}")
    print(f"  lm-eval flexible-extract == stated number: {pct(counts['lm_flexible_is_stated'], numeric)}")
    print(f"  ours flexible == lm-eval flexible-extract: {pct(counts['flexible_is_lm_flexible'], n)}")
    print(f"  ours strict finds an answer: {pct(counts['strict_found'], n)}; lm-eval strict-match: "
          f"{pct(counts['lm_strict_found'], n)}")  # fmt: skip
    gold = (counts["strict_gold"], counts["flexible_gold"], counts["lm_flexible_gold"])
    print(f"  == gold: ours strict {pct(gold[0], n)}, ours flexible {pct(gold[1], n)}, "
          f"lm-eval flexible {pct(gold[2], n)}")  # fmt: skip
    print(f"  disagreements with stated: {len(differ)}")
    for line in differ if show else differ[:5]:
        print(f"  - {line}")
    if show:
        print(f"  ours flexible vs lm-eval flexible-extract, {len(versus)} differences:")
        for line in versus:
            print(f"  - {line}")


# The final statement of each teacher sample, rewritten in the other forms models write it in.
FORMS = {
    "A: N": "\nA: {n}",
    "Answer: N": "\nAnswer: {n}",
    "Final answer: N": "\nFinal answer: {n}",
    "**Answer:** N": "\n**Answer:** {n}",
    "\\boxed{N}": " So we get $\\boxed{{{n}}}$.",
    "#### N": "\n#### {n}",
    "the answer is <N>.": " Therefore, the answer is <{n}>.",
}
_FINAL = re.compile(r"The answer is \$?(-?[0-9][0-9,]*(?:\.[0-9]+)?)\$?(?:\s+[a-zA-Z ]+)?\.?\s*$")


def measure_forms(rows: list[tuple[str, str]]) -> None:
    """Strict extraction when the same rationales end in each final-answer form instead."""
    from scalingdown.data.answers import extract_numeric

    plain = [(text.strip(), match) for text, _ in rows if (match := _FINAL.search(text.strip()))]
    print(f"\nthe {len(plain):,} teacher samples ending in one plain 'The answer is N.', rewritten:")
    for form, template in FORMS.items():
        agree = 0
        for text, match in plain:
            rewritten = text[: match.start()].rstrip() + template.format(n=match.group(1))
            agree += same(extract_numeric(rewritten, strict=True), match.group(1))
        print(f"  ends in {form:20s} strict == stated: {agree:,}/{len(plain):,}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list every disagreement, not the first 5")
    args = parser.parse_args()
    found = corpora()
    if not found:
        print(f"no corpus found under {DATA}", file=sys.stderr)
        return 2
    for name, rows in found.items():
        measure(name, rows, args.list)
    samples = next((rows for name, rows in found.items() if name.startswith("teacher_samples")), None)
    if samples:
        measure_forms(samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
