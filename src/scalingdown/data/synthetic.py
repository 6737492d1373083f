"""The synthetic grade-school-math task: seeded multi-step word problems with exact rationales.

It is the task of the offline demo and of fast tests, so it is built to be learnable by tiny LMs:
regular sentences, small numbers, and a rationale that states every step as one equation:

    question:  "Mia has 7 apples. She buys 5 more apples. Then she gives away 3 apples.
                How many apples does Mia have now?"
    rationale: "Mia starts with 7 apples.\\nShe buys 5 more: 7 + 5 = 12.\\nShe gives away 3: 12 - 3 = 9."
    answer:    "9"

Rationales write multiplication as `x` (never `*` or `×`): `12 x 3 = 36`. The final sentence
"The answer is 9." is not part of the rationale; the prompt layer appends it.

Arithmetic stays exact and small: every number a problem states (the start and each step's operand)
lies in [2, max_value]; every running total lies in [1, 10 * max_value]; multipliers and divisors are
at most `MAX_FACTOR`; division only ever divides exactly.

Two template families: "core" is the task itself; "broad" holds every core template (same step
phrasings) plus other stories, names and items, and is what the demo's teachers pre-train on (give it
a larger `max_steps`). Core test questions never appear verbatim in a broad corpus, because the space
of question texts is split once and for all by a stable hash: `split="test"` draws only from a reserved
eighth of that space and every other split only from the rest (`is_test_reserved`). The same rule
keeps any train and test problems apart, whatever seeds made them.

Whether a rationale (a teacher's, or the gold one) does the work is checked by the general
`scalingdown.teach.verify.verify_rationale`, the same for this task as for GSM8K.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

from scalingdown.config import SyntheticConfig
from scalingdown.data.schema import Problem
from scalingdown.errors import UserError

OPS = ("+", "-", "x", "/")
MAX_FACTOR = 10  # largest multiplier or divisor: keeps products within reach of a tiny model
VALUE_CAP_FACTOR = 10  # running totals stay <= VALUE_CAP_FACTOR * max_value
TEST_SHARE = 8  # one question text in TEST_SHARE is reserved for test splits
_MAX_REJECTIONS = 100_000  # draws without an acceptable question before giving up


@dataclass(frozen=True)
class StoryTemplate:
    """One story: its opening, its closing question, and a phrasing per operation.

    Placeholders: {name}, {Pron}/{pron} (She/she), {Poss}/{poss} (Her/her), {item}, {a}, {b}.
    `steps[op]` is (question sentence, rationale prefix); the rationale line is the prefix followed by
    ": a op b = c.". Question sentences start with a pronoun or an article so that later steps can be
    written "Then she ...".
    """

    name: str
    items: tuple[str, ...]
    opening: str
    steps: dict[str, tuple[str, str]]
    broad_items: tuple[str, ...] = ()  # extra items used only by the broad family
    start: str = "{name} starts with {a} {item}."
    question: str = "How many {item} does {name} have now?"


CORE_TEMPLATES: tuple[StoryTemplate, ...] = (
    StoryTemplate(
        "market",
        ("apples", "oranges", "pears", "lemons"),
        "{name} has {a} {item}.",
        {
            "+": ("{Pron} buys {b} more {item}.", "{Pron} buys {b} more"),
            "-": ("{Pron} gives away {b} {item}.", "{Pron} gives away {b}"),
            "x": ("{Pron} gets {b} times as many {item} as before.", "{Pron} gets {b} times as many"),
            "/": (
                "{Pron} splits the {item} into {b} equal bags and keeps one bag.",
                "{Pron} keeps one of {b} bags",
            ),
        },
        broad_items=("plums", "peaches"),
    ),
    StoryTemplate(
        "bakery",
        ("cookies", "muffins", "cupcakes", "rolls"),
        "{name} bakes {a} {item}.",
        {
            "+": ("{Pron} bakes {b} more {item}.", "{Pron} bakes {b} more"),
            "-": ("{Pron} sells {b} {item}.", "{Pron} sells {b}"),
            "x": ("{Pron} bakes until {pron} has {b} times as many {item}.", "{Pron} has {b} times as many"),
            "/": (
                "{Pron} packs the {item} equally into {b} boxes and keeps one box.",
                "{Pron} keeps one of {b} boxes",
            ),
        },
        broad_items=("pies", "bagels"),
    ),
    StoryTemplate(
        "savings",
        ("dollars",),
        "{name} saves {a} {item}.",
        {
            "+": ("{Pron} earns {b} more {item}.", "{Pron} earns {b} more"),
            "-": ("{Pron} spends {b} {item}.", "{Pron} spends {b}"),
            "x": ("{Poss} savings grow to {b} times as much.", "{Poss} savings grow {b} times"),
            "/": (
                "{Pron} splits {poss} {item} equally into {b} jars and keeps one jar.",
                "{Pron} keeps one of {b} jars",
            ),
        },
        broad_items=("coins",),
    ),
    StoryTemplate(
        "garden",
        ("flowers", "tulips", "roses", "daisies"),
        "{name} plants {a} {item}.",
        {
            "+": ("{Pron} plants {b} more {item}.", "{Pron} plants {b} more"),
            "-": ("{Pron} gives {b} {item} to a neighbor.", "{Pron} gives {b} to a neighbor"),
            "x": ("The {item} multiply until there are {b} times as many.", "There are {b} times as many"),
            "/": (
                "{Pron} divides the {item} equally among {b} beds and keeps one bed.",
                "{Pron} keeps one of {b} beds",
            ),
        },
        broad_items=("lilies", "carrots"),
    ),
)

BROAD_ONLY_TEMPLATES: tuple[StoryTemplate, ...] = (
    StoryTemplate(
        "game",
        ("points", "stars", "tokens"),
        "{name} scores {a} {item}.",
        {
            "+": ("{Pron} wins {b} more {item}.", "{Pron} wins {b} more"),
            "-": ("{Pron} loses {b} {item}.", "{Pron} loses {b}"),
            "x": ("A bonus multiplies {poss} {item} by {b}.", "The bonus multiplies by {b}"),
            "/": (
                "{Pron} shares the {item} equally in a team of {b} and keeps one share.",
                "{Pron} keeps one of {b} shares",
            ),
        },
    ),
    StoryTemplate(
        "collection",
        ("stickers", "marbles", "cards", "shells"),
        "{name} collects {a} {item}.",
        {
            "+": ("{Pron} finds {b} more {item}.", "{Pron} finds {b} more"),
            "-": ("{Pron} trades away {b} {item}.", "{Pron} trades away {b}"),
            "x": (
                "{Pron} collects until {pron} has {b} times as many {item}.",
                "{Pron} has {b} times as many",
            ),
            "/": (
                "{Pron} sorts the {item} equally into {b} albums and keeps one album.",
                "{Pron} keeps one of {b} albums",
            ),
        },
    ),
    StoryTemplate(
        "farm",
        ("chickens", "sheep", "goats", "ducks"),
        "{name} keeps {a} {item} on a farm.",
        {
            "+": ("{Pron} gets {b} more {item} at the fair.", "{Pron} gets {b} more"),
            "-": ("{Pron} sells {b} {item} at the market.", "{Pron} sells {b}"),
            "x": ("The herd grows to {b} times as many {item}.", "The herd grows {b} times"),
            "/": (
                "{Pron} divides the {item} equally among {b} pens and keeps one pen.",
                "{Pron} keeps one of {b} pens",
            ),
        },
    ),
    StoryTemplate(
        "party",
        ("balloons", "cups", "hats"),
        "{name} has {a} {item} for a party.",
        {
            "+": ("{Pron} brings {b} more {item}.", "{Pron} brings {b} more"),
            "-": ("{Pron} loses {b} {item} on the way.", "{Pron} loses {b}"),
            "x": ("{Pron} ends up with {b} times as many {item}.", "{Pron} ends up with {b} times as many"),
            "/": (
                "{Pron} splits the {item} equally among {b} tables and keeps one table.",
                "{Pron} keeps one of {b} tables",
            ),
        },
    ),
)

# (name, subject pronoun, possessive pronoun)
CORE_NAMES: tuple[tuple[str, str, str], ...] = (
    ("Mia", "she", "her"), ("Leo", "he", "his"), ("Ava", "she", "her"), ("Sam", "he", "his"),
    ("Zoe", "she", "her"), ("Max", "he", "his"), ("Lily", "she", "her"), ("Ben", "he", "his"),
)  # fmt: skip
BROAD_ONLY_NAMES: tuple[tuple[str, str, str], ...] = (
    ("Nina", "she", "her"), ("Omar", "he", "his"), ("Ruby", "she", "her"),
    ("Jack", "he", "his"), ("Ella", "she", "her"), ("Tom", "he", "his"),
)  # fmt: skip

FAMILIES = ("core", "broad")


@dataclass
class _Family:
    templates: tuple[StoryTemplate, ...]
    names: tuple[tuple[str, str, str], ...]
    broad: bool = False

    def items_of(self, template: StoryTemplate) -> tuple[str, ...]:
        return template.items + template.broad_items if self.broad else template.items


def _family(templates: str) -> _Family:
    if templates == "core":
        return _Family(CORE_TEMPLATES, CORE_NAMES)
    if templates == "broad":
        return _Family(CORE_TEMPLATES + BROAD_ONLY_TEMPLATES, CORE_NAMES + BROAD_ONLY_NAMES, broad=True)
    raise UserError(f"synthetic.templates: {templates!r} is not one of {', '.join(map(repr, FAMILIES))}")


def is_test_reserved(question: str) -> bool:
    """True for the fixed eighth of question texts that only test splits may use (a stable hash)."""
    return hashlib.blake2b(question.encode("utf-8"), digest_size=2).digest()[0] % TEST_SHARE == 0


def _apply(op: str, a: int, b: int) -> int | None:
    """a op b, or None where the result is not an exact integer."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "x":
        return a * b
    if b == 0 or a % b:
        return None
    return a // b


def _pick_step(rng: random.Random, current: int, max_value: int) -> tuple[str, int]:
    """One operation and its operand, chosen uniformly among those that keep the total in range."""
    cap = VALUE_CAP_FACTOR * max_value
    factor_max = min(MAX_FACTOR, max_value)
    choices: dict[str, list[int] | range] = {}
    if current + 2 <= cap:
        choices["+"] = range(2, min(max_value, cap - current) + 1)
    if current >= 3:
        choices["-"] = range(2, min(max_value, current - 1) + 1)
    if current * 2 <= cap:
        choices["x"] = range(2, min(factor_max, cap // current) + 1)
    divisors = [d for d in range(2, factor_max + 1) if current % d == 0]
    if divisors:
        choices["/"] = divisors
    op = rng.choice(list(choices))  # built in OPS order, so the draw is stable
    return op, rng.choice(choices[op])


def _draw(rng: random.Random, family: _Family, min_steps: int, max_steps: int, max_value: int):
    """One problem as (question, rationale, answer, meta)."""
    template = rng.choice(family.templates)
    name, pron, poss = rng.choice(family.names)
    words = {
        "name": name,
        "pron": pron,
        "Pron": pron.capitalize(),
        "poss": poss,
        "Poss": poss.capitalize(),
        "item": rng.choice(family.items_of(template)),
    }
    current = rng.randint(2, max_value)
    sentences = [template.opening.format(a=current, **words)]
    lines = [template.start.format(a=current, **words)]
    ops = []
    for index in range(rng.randint(min_steps, max_steps)):
        op, b = _pick_step(rng, current, max_value)
        result = _apply(op, current, b)
        sentence, prefix = template.steps[op]
        sentence = sentence.format(b=b, **words)
        sentences.append(sentence if index == 0 else f"Then {sentence[0].lower()}{sentence[1:]}")
        lines.append(f"{prefix.format(b=b, **words)}: {current} {op} {b} = {result}.")
        ops.append(op)
        current = result
    sentences.append(template.question.format(**words))
    meta = {"steps": len(ops), "ops": ops, "template": template.name}
    return " ".join(sentences), "\n".join(lines), str(current), meta


def _iter_drawn(
    *, seed: int, split: str, min_steps: int, max_steps: int, max_value: int, templates: str
) -> Iterator[tuple[str, str, str, dict]]:
    """Endless stream of problems whose question belongs to `split`'s side of the hash partition."""
    if not 1 <= min_steps <= max_steps:
        raise UserError(f"synthetic.min_steps: need 1 <= min_steps ({min_steps}) <= max_steps ({max_steps})")
    if max_value < 2:
        raise UserError(f"synthetic.max_value: must be at least 2, got {max_value}")
    family = _family(templates)
    want_reserved = split == "test"
    # Seeding with a string is stable across runs and processes; split and family get their own streams.
    rng = random.Random(f"synthetic:{templates}:{split}:{seed}")
    rejected = 0
    while True:
        drawn = _draw(rng, family, min_steps, max_steps, max_value)
        if is_test_reserved(drawn[0]) == want_reserved:
            rejected = 0
            yield drawn
            continue
        rejected += 1
        if rejected > _MAX_REJECTIONS:  # pragma: no cover - only a degenerate template set gets here
            raise UserError(f"synthetic: found no question for split {split!r} in {_MAX_REJECTIONS} draws")


def _problem(drawn: tuple[str, str, str, dict], index: int, split: str, id_prefix: str) -> Problem:
    question, rationale, answer, meta = drawn
    return Problem(
        id=f"{id_prefix}-{split}-{index:05d}",
        question=question,
        answer=answer,
        rationale=rationale,
        source="synthetic",
        split=split,
        meta=meta,
    )


def generate(
    n: int,
    *,
    seed: int,
    split: str,
    min_steps: int = 1,
    max_steps: int = 3,
    max_value: int = 20,
    templates: str = "core",
    id_prefix: str = "synthetic",
) -> list[Problem]:
    """`n` independent problems (duplicates possible), identical for identical arguments.

    A "test" split draws from the test-reserved questions only, any other split from the rest, so
    train and test never share a question. Ids are f"{id_prefix}-{split}-{i:05d}".
    """
    if n < 0:
        raise UserError(f"synthetic: the number of problems must be >= 0, got {n}")
    stream = _iter_drawn(
        seed=seed,
        split=split,
        min_steps=min_steps,
        max_steps=max_steps,
        max_value=max_value,
        templates=templates,
    )
    return [_problem(next(stream), i, split, id_prefix) for i in range(n)]


def generate_splits(config: SyntheticConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train, test) from the config; test questions are distinct and none appears in train.

    Train problems are independent draws (a repeated question is a realistic duplicate); test
    problems are deduplicated by question text so that each test item counts once.
    """
    knobs = dict(
        min_steps=config.min_steps,
        max_steps=config.max_steps,
        max_value=config.max_value,
        templates=config.templates,
    )
    train = generate(config.n_train, seed=seed, split="train", **knobs)
    seen: set[str] = set()
    test: list[Problem] = []
    repeats = 0  # a space too small for n_test shows as ever more repeats
    for drawn in _iter_drawn(seed=seed, split="test", **knobs):
        if drawn[0] in seen:
            repeats += 1
            if repeats > 20 * config.n_test + 1000:
                raise UserError(
                    f"synthetic.n_test: only about {len(test)} distinct test questions exist for these "
                    "settings; raise max_value or max_steps, or lower n_test"
                )
            continue
        seen.add(drawn[0])
        test.append(_problem(drawn, len(test), "test", "synthetic"))
        if len(test) == config.n_test:
            break
    return train, test
