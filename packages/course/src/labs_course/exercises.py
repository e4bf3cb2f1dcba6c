"""Exercise checks for the notebooks: one line of feedback each, and never an exception.

A notebook ships its exercises unsolved; after each one a cell calls ``check``::

    check(3, lambda: vecs.shape == (8, 2352), "permute to channels first, then reshape")

``check`` runs the test, prints ``exercise 3: done`` or ``exercise 3: not yet - <hint>`` and
returns whether it passed. A missing answer (``NameError``), an unfinished function
(``NotImplementedError``), a failed ``assert`` or any other ``Exception`` counts as "not yet", so
*Run All* still reaches the end. The kernel's tally keeps each exercise's latest result;
``mark_notebook`` (``record.py``) writes how many passed.
"""

from __future__ import annotations

from collections.abc import Callable

_TALLY: dict[int, bool] = {}
_DETAIL_CHARS = 160  # an assert's own message is added to the hint, cut to stay on one line


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def check(number: int, test: Callable[[], object], hint: str) -> bool:
    """Run ``test()`` for exercise ``number`` and print one line saying whether it passed.

    ``test`` takes no arguments and passes when it returns ``None`` (a test made of ``assert``
    statements) or a truthy value; it fails when it returns a falsy value or raises any
    ``Exception``. ``hint`` is what the learner reads when it fails; the message of a failed
    ``assert`` is appended to it. Returns True when the exercise passed; never raises.
    """
    try:
        result = test()
        ok = result is None or bool(result)
        detail = ""
    except Exception as err:  # noqa: BLE001 - any failure of the learner's code means "not yet"
        ok = False
        detail = str(err) if isinstance(err, AssertionError) else ""
    _TALLY[int(number)] = ok
    if ok:
        print(f"exercise {number}: done")
    else:
        extra = f" ({_one_line(detail)})" if detail.strip() else ""
        print(f"exercise {number}: not yet - {_one_line(hint)}{extra}")
    return ok


def tally() -> dict[int, bool]:
    """``{exercise number: whether its latest check passed}`` for this kernel, in number order."""
    return dict(sorted(_TALLY.items()))


def reset() -> None:
    """Forget every result (a fresh kernel starts empty; tests use this)."""
    _TALLY.clear()


def score(exercises: int | None = None) -> tuple[int, int]:
    """``(passed, total)``: ``total`` is ``exercises`` when the notebook declares it (so an
    exercise whose check never ran still counts), else the number of exercises checked; ``passed``
    counts exercises 1..total whose latest check passed."""
    results = tally()
    if exercises is None:
        return sum(results.values()), len(results)
    if exercises < 0:
        raise ValueError(f"exercises must be 0 or more, not {exercises}")
    return sum(ok for n, ok in results.items() if 1 <= n <= exercises), exercises
