"""Answer extraction and comparison: every documented format, its negatives, and real model outputs."""

from __future__ import annotations

import json
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from scalingdown.data.answers import (
    Scored,
    answers_match,
    extract_choice,
    extract_numeric,
    format_number,
    majority_vote,
    parse_number,
    score,
)
from scalingdown.data.schema import Problem

F = Fraction

# ---------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1,234.50", F(2469, 2)),
        ("1,234", F(1234)),
        ("1,000,000", F(10**6)),
        ("1,234,567.8", F(12345678, 10)),
        ("29.00", F(29)),
        ("576.0", F(576)),
        ("29", F(29)),
        (".5", F(1, 2)),
        ("0.125", F(1, 8)),
        ("-7", F(-7)),
        ("\u22127", F(-7)),  # unicode minus sign
        ("+7", F(7)),
        ("-0", F(0)),
        ("007", F(7)),
        ("3/4", F(3, 4)),
        ("-3/4", F(-3, 4)),
        ("12/4", F(3)),
        ("1 1/2", F(3, 2)),  # mixed number
        ("-1 1/2", F(-3, 2)),
        ("50%", F(50)),  # a percentage keeps its number, so it matches gold "50"
        ("12.5%", F(25, 2)),
        ("72.", F(72)),  # sentence period
        ("1.5.", F(3, 2)),
        ("  72  ", F(72)),
        ("$-5", F(-5)),
        ("-$5", F(-5)),
        ("$0.20", F(1, 5)),
    ],
)
def test_parse_number_reads_each_format(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "$",
        ".",
        "3,4",  # a list, not a thousands group
        "1,23",
        "1,0000",
        "5 apples",
        "12 13",
        "3 and 4",
        "5/0",
        "1e3",
        "2.5k",
        "\u00bd",  # unicode one-half: documented as unsupported
        "3 12/4",  # an improper fraction never joins a whole number
        "--5",
        "1.2.3",
        "72..",
        "five",
    ],
)
def test_parse_number_rejects_non_numbers(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (F(29), "29"),
        (F(0), "0"),
        (F(-7, 2), "-3.5"),
        (F(1, 8), "0.125"),
        (F(-1, 8), "-0.125"),
        (F(2469, 2), "1234.5"),
        (F(3, 20), "0.15"),
        (F(7, 5), "1.4"),
        (F(1, 1024), "0.0009765625"),
        (F(-1, 100), "-0.01"),
        (F(1, 3), "1/3"),
        (F(-2, 3), "-2/3"),
        (F(1, 6), "1/6"),
        (F(22, 7), "22/7"),
        (F(10**20), "100000000000000000000"),
        (F(-(10**20) - 1, 4), "-25000000000000000000.25"),
    ],
)
def test_format_number_writes_finite_decimals_as_decimals_else_a_over_b(value, expected):
    assert format_number(value) == expected


def _random_fractions(count: int, seed: int) -> list[Fraction]:
    rng = random.Random(seed)
    denominators = [1, 2, 4, 5, 8, 10, 16, 20, 25, 100, 1000, 1024, 3, 6, 7, 9, 12, 99]
    values = []
    for _ in range(count):
        denominator = rng.choice(denominators + [rng.randint(1, 10**4)])
        values.append(F(rng.randint(-(10**7), 10**7), denominator))
    return values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_format_then_parse_round_trips_random_fractions(seed):
    for value in _random_fractions(400, seed):
        text = format_number(value)
        assert parse_number(text) == value, text
        assert format_number(parse_number(text)) == text
        if "." in text:
            assert not text.endswith("0") and text.lstrip("-")[0] != "."
        assert text != "-0"
        finite_decimal = all(p in (2, 5) for p in _prime_factors(value.denominator))
        assert ("/" in text) == (not finite_decimal), text


def _prime_factors(n: int) -> set[int]:
    factors, p = set(), 2
    while p * p <= n:
        while n % p == 0:
            factors.add(p)
            n //= p
        p += 1
    return factors | ({n} if n > 1 else set())


def test_parse_number_ignores_dollars_commas_and_sentence_periods_on_random_values():
    rng = random.Random(7)
    for _ in range(300):
        cents = rng.randint(-(10**9), 10**9)
        value = F(cents, 100)
        whole, frac = divmod(abs(cents), 100)
        sign = "-" if cents < 0 else ""
        plain = f"{sign}{whole}.{frac:02d}"
        grouped = f"{sign}${whole:,}.{frac:02d}."
        assert parse_number(plain) == value
        assert parse_number(grouped) == value, grouped


# ------------------------------------------------------------------------------------ numeric extraction

STRICT_NUMERIC = [
    ("#### 72", "72"),
    ("Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("####1,234", "1234"),
    ("The answer is 576.", "576"),
    ("the answer is: 42", "42"),
    ("So the answer is $1,234.50.", "1234.5"),
    ("answer is $5", "5"),
    ("THE ANSWER IS -3.", "-3"),
    ("The answer is \u22123", "-3"),
    ("The answer is 29.00", "29"),
    ("The answer is 3/4.", "0.75"),
    ("The answer is 2/3.", "2/3"),
    ("The answer is 1 1/2 cups.", "1.5"),
    ("The answer is 25%.", "25"),
    ("The answer is .5", "0.5"),
    ("The answer is 1,000 dollars", "1000"),
    ("The answer is 5 + 3 = 8.", "8"),  # equation: the number after the last "="
    ("The answer is 2 * $3 = $6. Then 10 more came.", "6"),
    ("The answer is 22/7 \u2248 3.14", "3.14"),
    ("The answer is 10. Wait, the answer is 12.", "12"),  # the last statement wins
    ("#### 5\nThe answer is 7", "7"),
    ("The answer is 7\n#### 5", "5"),
    ("The final answer is 9", "9"),
    ("the answer is **18**.", "18"),
    ("The answer is:\n\n42", "42"),
    ("The answer is $\\boxed{72}$.", "72"),
    ("The answer is -$5.", "-5"),
    ("The answer is (-5)", "-5"),
    ("The answer is $18.00.", "18"),
    ("He had 5 apples. The answer is 3. Then he bought 20 more.", "3"),
]


@pytest.mark.parametrize(("text", "expected"), STRICT_NUMERIC)
def test_strict_numeric_reads_the_final_answer_statement(text, expected):
    assert extract_numeric(text, strict=True) == expected


@pytest.mark.parametrize(("text", "expected"), STRICT_NUMERIC)
def test_flexible_numeric_equals_strict_when_a_statement_exists(text, expected):
    assert extract_numeric(text, strict=False) == expected


# Final-answer forms real models write (issue 11, item 1): each is a strict statement.
FINAL_ANSWER_FORMS = [
    ("He has 5 + 3 = 8 apples.\nA: 8", "8"),  # GPT-3 few-shot style: a final line "A: N"
    ("A: 72", "72"),
    ("Work: 9 x 2 = 18.\n\nA: $1,234.50", "1234.5"),
    ("She earns 9 x 2 = 18.\nAnswer: 18", "18"),
    ("Answer: $18.", "18"),
    ("Answer: 7 eggs.", "7"),
    ("Final answer: 42", "42"),
    ("First 4 + 3 = 7.\nFinal Answer: 3/4", "0.75"),
    ("The final answer: 15 apples", "15"),
    ("**Answer:** 18", "18"),
    ("**Final Answer:** 18 apples", "18"),
    ("*Answer*: 5", "5"),
    ("So we get $\\boxed{72}$.", "72"),
    ("\\boxed{72}", "72"),
    ("\\boxed{\\frac{3}{4}}", "0.75"),
    ("The fraction is $\\boxed{\\dfrac{10}{3}}$", "10/3"),
    ("$\\boxed{-\\frac{1}{2}}$", "-0.5"),
    ("$\\boxed{1{,}250}$", "1250"),
    ("\\boxed{18 \\text{ apples}}", "18"),
    ("\\boxed{\\$18.50}", "18.5"),
    ("\\boxed{5} is wrong, it is \\boxed{6}", "6"),  # the last statement wins
    ("Therefore, the answer is <203>.", "203"),
    ("Therefore, the answer is <4.62>.", "4.62"),
    ("29 x 7 = 203 pairs\n\nTherefore, the answer is <203>.", "203"),
    ("#### 18", "18"),
    ("The answer is 5.\n#### 6", "6"),
]

# Space- or thin-space-grouped thousands inside an answer statement (item 2).
SPACED_THOUSANDS = [
    ("The answer is $9 500.", "9500"),
    ("So, the answer is $118 000.", "118000"),
    ("The answer is 1 000 000 people.", "1000000"),
    ("The answer is 12\u2009500.", "12500"),  # thin space
    ("The answer is 12\u202f500 dollars", "12500"),  # narrow no-break space
    ("The answer is 12\u00a0500", "12500"),  # no-break space
    ("#### 9 500", "9500"),
    ("Answer: 3 600", "3600"),
    ("The answer is 1 1/2 cups.", "1.5"),  # a mixed number is not a thousands group
    ("The answer is 5 500/1000 = 5.5", "5.5"),
]

# Several numbers in one answer sentence (item 4): the one marked as the total or the result.
MARKED_TOTALS = [
    ("So, the answer is 5 arms and 3 legs, or 8 limbs in total.", "8"),
    ("The answer is 6 pieces, or 6 * 2.5 = 15 ounces.", "15"),  # "=" marks the result
    ("The answer is 4 + 16 + 20 = 40.", "40"),
    ("The answer is 3 apples and 2 pears, for a total of 5 fruits.", "5"),
    ("The answer is 12 pens and 8 pencils, so 20 altogether.", "20"),
    ("The answer is 8 (8 apples).", "8"),  # the same value twice is one answer
    ("The answer is $18.00 ($18).", "18"),
    ("The answer is 10 km2.", "10"),  # a digit glued to a unit is not a second number
]


@pytest.mark.parametrize(("text", "expected"), FINAL_ANSWER_FORMS + SPACED_THOUSANDS + MARKED_TOTALS)
def test_strict_numeric_reads_the_final_answer_forms_models_write(text, expected):
    assert extract_numeric(text, strict=True) == expected
    assert extract_numeric(text, strict=False) == expected


@pytest.mark.parametrize(
    ("text", "flexible"),
    [
        # no number in the last statement: no answer at all, not a number from elsewhere (item 3)
        ("The answer is unknown.", None),
        ("There are 5 apples and 3 pears. The answer is unknown.", None),
        ("The answer is 12.\nThe answer is unknown.", None),
        ("The answer is unknown.\nWe had 7 then.", None),
        ("Final answer: none of them", None),
        ("It is $\\boxed{x}$", None),
        # several numbers, none marked as the total: strict gives none, flexible the first (item 4)
        ("The answer is 110 tomatoes and 32 eggplants.", "110"),
        ("The answer is 2 or 3.", "2"),
        ("The answer is 8 apples for 2 days.", "8"),
        ("The answer is 1 hour and 30 minutes.", "1"),
        ("The answer is 110 tomatoes and 32 eggplants in total.", "110"),  # "in total" covers both
        ("The answer is 60 dishes and 60 socks.", "60"),  # a list, even of equal numbers
        ("The answer is 18 + x hours.", "18"),  # an expression with a variable is no number
        ("The answer is x - 5.", "5"),
    ],
)
def test_answer_statements_without_one_clear_number_give_no_strict_answer(text, flexible):
    assert extract_numeric(text, strict=True) is None
    assert extract_numeric(text, strict=False) == flexible


@pytest.mark.parametrize(
    ("text", "flexible"),
    [
        ("Let us see what the answer is.\n5 + 3 = 8", "8"),  # "answer is" with nothing after it
        ("A: He had 5 apples and ate 2, so 3 are left.", "3"),  # "A:" then prose: a label
        ("A: 5 apples cost $2 each.\nSo 5 x 2 = 10 dollars.", "10"),  # "A: N" not on the final line
        ("Answer: 48/2 = 24 clips in May.\n48 + 24 = 72 clips.", "72"),  # "Answer:" labels the work
        ("Answer: The total is 18 apples", "18"),
        ("#### ", None),
    ],
)
def test_labels_that_are_not_final_answer_statements(text, flexible):
    assert extract_numeric(text, strict=True) is None
    assert extract_numeric(text, strict=False) == flexible


@pytest.mark.parametrize(
    ("text", "flexible"),
    [
        ("So she has 18 dollars.", "18"),
        ("He paid $1,234.50 in total.", "1234.5"),
        ("It costs 72.", "72"),
        ("The numbers are 3,4 and 5", "5"),
        ("The numbers are 3,4", "4"),  # a comma that is not thousands grouping separates numbers
        ("5-3", "3"),  # subtraction, not a negative number
        ("so x = -3", "-3"),
        ("He ate 1/3 of the pie", "1/3"),
        ("It took 2 1/2 hours", "2.5"),
        ("He ate 2 1/3 pies", "7/3"),
        ("a 10% discount", "10"),
        ("COVID-19", "19"),  # a hyphen after a letter is no minus sign
        ("my answer isn't 5, it's 6", "6"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_without_a_statement_strict_finds_nothing_and_flexible_takes_the_last_number(text, flexible):
    assert extract_numeric(text, strict=True) is None
    assert extract_numeric(text, strict=False) == flexible


# lm-evaluation-harness gsm8k "flexible-extract": this regex, last match, then ",", "$" and a final "." go.
_HARNESS_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def _harness_flexible_value(text: str) -> Fraction | None:
    matches = _HARNESS_FLEXIBLE.findall(text)
    if not matches:
        return None
    answer = next(group for group in matches[-1] if group)
    answer = re.sub(r"\.$", "", answer.replace(",", "").replace("$", ""))
    return Fraction(answer)


@pytest.mark.parametrize(
    "text",
    [
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.",
        "She makes 9 * 2 = $18 every day at the farmer's market.",
        "Total: $1,234.50.",
        "The temperature dropped to -5 degrees",
        "He runs 3.5 miles a day, so 3.5 * 7 = 24.5 miles a week.",
        "In 2019 there were 1,000 people; now there are 1,250.",
        "So she needs 10 more.\nDone.",
        "It is 50% off, so it costs $25.",
        "Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10.",
        "The ratio is 3:4, so there are 12 boys and 16 girls",
        "First 5 + 6 = 11, then 11 * 2 = 22 apples",
        "Answer: 7 eggs.",
        "He has 100 dollars, which is 40 more than 60.",
        "A total of 0.75 liters.",
        "She is 28 years old, born in 1,995",
    ],
)
def test_flexible_numeric_picks_the_same_number_as_lm_eval_harness(text):
    assert parse_number(extract_numeric(text, strict=False)) == _harness_flexible_value(text)


# ------------------------------------------------------------------------------------- choice extraction

STRICT_CHOICE = [
    ("The answer is B.", "B"),
    ("the answer is c", "C"),
    ("Answer: C", "C"),
    ("ANSWER:E", "E"),
    ("Answer : B", "B"),
    ("Answer B", "B"),
    ("Answer (B)", "B"),
    ("Answer: D) 109 rolls", "D"),
    ("Answer C)59, 43", "C"),
    ("ANSWER D 8000", "D"),
    ("Correct answer - A", "A"),
    ("correct answer B", "B"),
    ("Answer is D", "D"),
    ("Answer: Option B", "B"),
    ("The correct answer choice is (B).", "B"),
    ("CORRECT OPTION:OPTION E", "E"),
    ("correct option is B", "B"),
    ("Correct Option: A", "A"),
    ("Ans: B", "B"),
    ("ANS:A", "A"),
    ("Ans - C", "C"),
    ("Ans is A.", "A"),
    ("So answer is D", "D"),
    ("Hence answer will be A. 5\u03c0", "A"),
    ("Answer = E", "E"),
    ("#### C", "C"),
    ("E is the answer.", "E"),
    ("Thus, C is the correct answer", "C"),
    ("So option A is correct.", "A"),
    ("Therefore A is correct", "A"),
    ("Answer A is correct option", "A"),
    ("The Answer is, B.", "B"),
    ("= 438\nanswer.A", "A"),
    ("**Answer: C**", "C"),
    ("The answer is $\\boxed{C}$.", "C"),
    ("The answer is $C$", "C"),
    ("Answer:D", "D"),
    ("the answer is a.", "A"),
    ("The answer is A because the train is faster.", "A"),
    ("The answer is (C) and not (D).", "C"),
    ("Answer: A. B is wrong because it is too small.", "A"),
    ("Answer: A\nLet me double-check... yes, the answer is B.", "B"),  # the last statement wins
    ("The answer is B.\nTo answer a question like this, draw it.", "B"),  # "answer a question": article
]


@pytest.mark.parametrize(("text", "expected"), STRICT_CHOICE)
def test_strict_choice_reads_explicit_answer_statements(text, expected):
    assert extract_choice(text, None, strict=True) == expected


@pytest.mark.parametrize(("text", "expected"), STRICT_CHOICE)
def test_flexible_choice_equals_strict_when_a_statement_exists(text, expected):
    assert extract_choice(text, None, strict=False) == expected


# Strict also reads a final line that names an option (item 5).
FINAL_LINE_CHOICE = [
    ("Work.\nAnswer choice B", "B"),
    ("Work.\nOption C", "C"),
    ("Option C", "C"),
    ("Work.\n(Option D)", "D"),
    ("Work.\nOption E.", "E"),
    ("Work.\nThe correct answer choice: (A)", "A"),
    ("Work.\n**Option B**", "B"),
    ("Work.\nOption C: 600 miles", "C"),
    ("Option A is wrong because it is too small.\nOption C", "C"),
]


@pytest.mark.parametrize(("text", "expected"), FINAL_LINE_CHOICE)
def test_strict_choice_reads_a_final_line_naming_an_option(text, expected):
    assert extract_choice(text, None, strict=True) == expected
    assert extract_choice(text, None, strict=False) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Option A is wrong because it is too small.",
        "Let's check each answer choice: (A) is wrong, (B) is too small.",
        "Option B and option C are close.",
    ],
)
def test_a_final_line_about_an_option_is_no_answer_statement(text):
    assert extract_choice(text, None, strict=True) is None


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        # a letter inside an expression is not an option (item 5)
        ("The answer is D/(M-3).", None, None),
        ("The contribution = D/M-3\nThe answer is D/(M-3)", None, None),
        ("So the probability is P(B)", None, None),
        ("P(A/B) = 0.16/0.8 = 0.2\nP(B)", None, None),
        ("The answer is f(a) = 3", None, None),
        ("Answer: B*A/2700", None, None),
        ("The answer is A+B", None, None),
        ("The answer is D(M-3)", None, None),
        # ... but an option letter next to its text still is
        ("Answer: D) 109 rolls", "D", "D"),
        ("Answer is (B)", "B", "B"),
        ("Answer: A. B is wrong", "A", "A"),
        ("C(8,4) - C(4,4) = 69\nAnswer is (B)", "B", "B"),
    ],
)
def test_letters_inside_expressions_are_not_options(text, strict, flexible):
    assert extract_choice(text, None, strict=True) == strict
    assert extract_choice(text, None, strict=False) == flexible


@pytest.mark.parametrize(
    "text",
    [
        "",
        "the answer is a train",  # the article is never option A
        "The answer is A man walking his dog.",
        "the answer is a 5% rise",
        "To answer each question, read carefully.",
        "The answers: B and C were both tried.",
        "She answered B",
        "The answer is 600 miles.",
        "The answer is e.g. 5",
        "The answer is F",
        "Let's check each answer choice: (A) is wrong, (B) is too small.",
        # two different options named: no answer at all
        "the answer is A or C",
        "Answer: (B) and (D)",
        "The answer is A, C",
        "answer is either b or d",
        "The answer is B/E.",
    ],
)
def test_strict_choice_rejects_non_answers(text):
    assert extract_choice(text, None, strict=True) is None


@pytest.mark.parametrize(
    "text",
    ["the answer is A or C", "Answer: (B) and (D)", "I think the answer is a or c.\n(A)", "(B) and (D)"],
)
def test_flexible_choice_treats_two_named_options_as_no_answer(text):
    assert extract_choice(text, None, strict=False) is None


def test_choice_letters_outside_the_options_are_not_answers():
    four = {"A": "1", "B": "2", "C": "3", "D": "4"}
    assert extract_choice("The answer is E.", four, strict=True) is None
    assert extract_choice("Answer: (E)", four, strict=False) is None
    assert extract_choice("The answer is d.", four, strict=True) == "D"


SPEEDS = {"A": "32400", "B": "6000", "C": "600", "D": "60000", "E": "10"}
LENGTHS = {"A": "100 m", "B": "150 m", "C": "200 m", "D": "250 m", "E": "300 m"}
TIMES = {"A": "5 hours", "B": "5 minutes", "C": "10 hours", "D": "2 hours", "E": "1 hour"}
STATEMENTS = {"A": "I only", "B": "III only", "C": "II only", "D": "I and II only", "E": "I and III only"}
PRICES = {"A": "1,879", "B": "1,875", "C": "1,876", "D": "1,872", "E": "1,800"}


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        # a lone letter in the final line
        ("(C)", None, "C"),
        ("Work.\nSo we pick C)", None, "C"),
        ("Choice: (d)", None, "D"),
        ("\\boxed{(c)}", None, "C"),
        ("lots of work\nD", None, "D"),
        ("c.", None, "C"),
        ("Some work\n(B) 20%", None, "B"),
        ("(B) is the one. Hmm, (B).", None, "B"),
        ("A) 5 B) 6 C) 7", None, None),  # echoed options name several letters
        ("The train is fast.\nA train is faster.", None, None),  # the article again
        ("The answer is 600", None, None),  # no options to match text against
        # no letter: the option whose text appears in the answer statement or the final line
        ("The speed is 600 miles.", SPEEDS, "C"),
        ("So the answer is 600 miles per minute.\nHope this helps!", SPEEDS, "C"),
        ("It takes 6000/10 = 600", SPEEDS, "C"),  # the latest matching option wins
        ("Total is 10.", SPEEDS, "E"),
        ("Total is 11.", SPEEDS, None),
        ("A train covers 600 miles", SPEEDS, "C"),  # "A train" is not option A
        ("x = 250 m", LENGTHS, "D"),
        ("the length is 250 metres", LENGTHS, "D"),  # numbers alone when the words differ
        ("It takes 5 minutes", TIMES, "B"),
        ("It takes 5 min", TIMES, None),  # "5 hours" and "5 minutes" match equally
        ("So III only.", STATEMENTS, "B"),
        ("Statement I holds, so I and II only", STATEMENTS, "D"),
        ("marked price = Rs. 1,800/-", PRICES, "E"),
        ("ANSWER: 3", PRICES, None),
    ],
)
def test_flexible_choice_reads_final_line_letters_then_option_texts(text, options, expected):
    assert extract_choice(text, options, strict=False) == expected
    if expected is not None:
        assert extract_choice(text, options, strict=True) is None  # none of these is an explicit statement


SQUARES = {"A": "(a - b)2", "B": "(a + b)2", "C": "a2 + b2", "D": "a2 - b2", "E": "2ab"}
COMBINATIONS = {"A": "5C3*4C3", "B": "5C3+4C3", "C": "5C3", "D": "4C3", "E": "9C6"}
VEHICLES = {"A": "50", "B": "150", "C": "200", "D": "250", "E": "400"}
AGES = {"A": "37", "B": "41", "C": "40", "D": "42", "E": "43"}
ANGLES = {"A": "160°", "B": "170°", "C": "20°", "D": "30°", "E": "40°"}
ANGLES_WITH_TEN = {"A": "160°", "B": "170°", "C": "10°", "D": "30°", "E": "40°"}


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        # operators are part of an option's text (item 5)
        ("So the expression equals (a + b)2", SQUARES, "B"),
        ("So the expression equals (a - b)2", SQUARES, "A"),
        ("It is a2 - b2", SQUARES, "D"),
        ("It is a2 + b2", SQUARES, "C"),
        # a "*" between operands is multiplication, not markdown emphasis
        ("The number of ways is 5C3*4C3", COMBINATIONS, "A"),
        ("The number of ways is **5C3*4C3**", COMBINATIONS, "A"),
        ("The number of ways is 5C3+4C3", COMBINATIONS, "B"),
        # one-paragraph outputs: the last sentence, after its last "=" (item 6)
        ("The hour hand moved 160° - 150° = 10°", ANGLES, None),
        (
            "The hand is at 160°. The other is at 150°. So the angle is 160° - 150° = 10°.",
            ANGLES_WITH_TEN,
            "C",
        ),
        ("The train covers 600 miles. So the time is 7 hours.", SPEEDS, None),
        ("The speed is 600 miles. Hope this helps!", SPEEDS, "C"),
        ("Its length is 150 m + 100 m = 250 m", LENGTHS, "D"),
        ("So V = 150+100 = 250=D", VEHICLES, "D"),  # an earlier result that is one value
        ("x = 150 + 100", VEHICLES, None),  # operands are no result
        ("Rahim must be 41 years old today. Because (36+5).", AGES, "B"),  # an aside is no sentence
    ],
)
def test_option_text_keeps_operators_and_reads_the_last_result(text, options, expected):
    assert extract_choice(text, options, strict=False) == expected


# ------------------------------------------------------------------------------------ comparison, score


@pytest.mark.parametrize(
    ("predicted", "gold", "choice", "expected"),
    [
        ("29", "29.00", False, True),
        ("576", "576.0", False, True),
        ("1234.5", "1,234.50", False, True),
        ("0.5", "1/2", False, True),
        ("-3", "\u22123", False, True),
        ("50", "50%", False, True),
        ("1/3", "0.333", False, False),  # exact comparison
        ("3", "4", False, False),
        (None, "3", False, False),
        ("abc", "abc", False, False),  # text that is no number never matches a number
        ("C", "C", True, True),
        ("c", "C", True, True),
        ("(C)", "C", True, True),
        ("B", "C", True, False),
        (None, "C", True, False),
    ],
)
def test_answers_match(predicted, gold, choice, expected):
    assert answers_match(predicted, gold, choice=choice) is expected


GSM_PROBLEM = Problem(id="t-1", question="How many?", answer="72", source="gsm8k", split="test")
AQUA_PROBLEM = Problem(
    id="t-2", question="How fast?", options=SPEEDS, answer="C", source="aqua_rat", split="test"
)


@pytest.mark.parametrize(
    ("problem", "text", "expected"),
    [
        (GSM_PROBLEM, "48 + 24 = 72.\nThe answer is 72.", Scored("72", True, "72", True)),
        (GSM_PROBLEM, "48 + 24 = 72 clips", Scored(None, False, "72", True)),
        (GSM_PROBLEM, "The answer is 70. Actually 72", Scored("70", False, "70", False)),
        (GSM_PROBLEM, "Answer: C", Scored(None, False, None, False)),  # numeric problems read numbers
        (AQUA_PROBLEM, "Answer: C", Scored("C", True, "C", True)),
        (AQUA_PROBLEM, "Work.\n(C)", Scored(None, False, "C", True)),
        (AQUA_PROBLEM, "The answer is 600", Scored(None, False, "C", True)),
        (AQUA_PROBLEM, "The answer is B", Scored("B", False, "B", False)),
    ],
)
def test_score_uses_the_problem_kind(problem, text, expected):
    assert score(problem, text) == expected


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["1", "2", "2"], "2"),
        (["1", "2"], "1"),  # a tie goes to the first seen
        (["2", "1", "1", "2"], "2"),
        (["B", "A", "A", None, None, None], "A"),  # None never wins
        ([None, "3"], "3"),
        ([None, None], None),
        ([], None),
        (["29", "29.0", "30"], "29"),  # equal values are one answer
        (["30", "29.0", "29"], "29.0"),
        (["a", "A", "B"], "a"),
    ],
)
def test_majority_vote(answers, expected):
    assert majority_vote(answers) == expected


# ---------------------------------------------------------------------------------------------- real data


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_strict_numeric_on_real_llm_rationales(teacher_samples):
    """Measured on 1,055 outputs: 97.8% carry a strict answer; it equals the file's gold for 59.6%
    (629): the file is unfiltered and many rationales reach a wrong number, which extraction must keep.
    benchmarks/answer_agreement.py compares every one with the answer its final statement states."""
    rows = json.loads(teacher_samples.read_text(encoding="utf-8"))
    pairs = [(extract_numeric(row["output"], strict=True), row) for row in rows]
    found = sum(answer is not None for answer, _ in pairs)
    correct = sum(answers_match(answer, row["answer"], choice=False) for answer, row in pairs)
    assert found / len(rows) >= 0.97
    assert correct / len(rows) >= 0.59
    # An independent reading of the same outputs: the final "The answer is N" sentence when it holds
    # one number and nothing else that could be one (measured: 998 such, all agree).
    plain = re.compile(r"The answer is \$?(-?[0-9][0-9,]*(?:\.[0-9]+)?)\$?(?:\s+[a-zA-Z ]+)?\.?\s*$")
    stated = [(answer, plain.search(row["output"].strip())) for answer, row in pairs]
    checked = [answers_match(answer, match.group(1), choice=False) for answer, match in stated if match]
    assert len(checked) >= 990 and all(checked)
    # Statements with several numbers get a strict answer only where one is marked as the total.
    several = [answer for answer, row in pairs if "110 tomatoes and 32 eggplants" in row["output"]
               or "or 8 limbs in total" in row["output"]]  # fmt: skip
    assert several == [None, "8"]


def test_strict_numeric_reads_every_gsm8k_gold_rationale(gsm8k_dir):
    rows = _jsonl(gsm8k_dir / "test.jsonl")
    for row in rows:
        gold = row["answer"].rsplit("####", 1)[1]
        assert parse_number(gold) is not None, gold
        assert answers_match(extract_numeric(row["answer"], strict=True), gold, choice=False), row["answer"]


def test_flexible_numeric_agrees_with_lm_eval_harness_on_gsm8k_rationales(gsm8k_dir):
    """Without the "####" line, on human rationales (annotations removed): measured agreement 99.9%;
    the rest end in a fraction such as "1/3", which is one number here and "3" for the harness."""
    rows = _jsonl(gsm8k_dir / "test.jsonl")
    texts = [re.sub(r"<<[^>]*>>", "", row["answer"].rsplit("####", 1)[0]) for row in rows]
    agree = sum(
        parse_number(extract_numeric(text, strict=False) or "") == _harness_flexible_value(text)
        for text in texts
    )
    assert agree / len(texts) >= 0.995


def test_choice_on_aqua_gold_rationales(aqua_dir):
    """Measured on the 254 dev rationales: flexible finds `correct` for 98.8%, strict for 89.4%,
    and neither ever names a wrong option (they say nothing where the rationale gives no answer)."""
    rows = _jsonl(aqua_dir / "dev.json")
    right = {True: 0, False: 0}
    wrong = {True: 0, False: 0}
    for row in rows:
        options = {option[0]: option[2:] for option in row["options"]}
        for strict in (True, False):
            answer = extract_choice(row["rationale"], options, strict=strict)
            right[strict] += answer == row["correct"]
            wrong[strict] += answer not in (None, row["correct"])
    assert right[False] / len(rows) >= 0.97
    assert right[True] / len(rows) >= 0.89
    assert wrong == {True: 0, False: 0}
