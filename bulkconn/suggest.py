"""'Did you mean' for names a user typed: properties, tenant aliases, enum values, columns.

Pure and small. The order of checks makes the common slips land on the right name: a different case
(``servername`` -> ``serverName``, ``Hosted`` -> ``hosted``), then a unique prefix (``delta`` ->
``deltaSync``), then :func:`difflib.get_close_matches` for typos (``contosso`` -> ``contoso``).
"""

from __future__ import annotations

from collections.abc import Iterable

_CUTOFF = 0.6  # difflib's default: close enough to be a typo, far enough not to guess wildly


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The one choice the user most likely meant by ``word``, or ``None`` when none is close."""
    folded: dict[str, str] = {}
    for choice in choices:
        folded.setdefault(choice.casefold(), choice)
    key = word.casefold()
    if not key:
        return None
    if key in folded:
        return folded[key]
    prefixed = [choice for lower, choice in folded.items() if lower.startswith(key)]
    if len(prefixed) == 1:
        return prefixed[0]
    import difflib  # only when a name is wrong: not part of every start-up

    matches = difflib.get_close_matches(key, list(folded), n=1, cutoff=_CUTOFF)
    return folded[matches[0]] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` to append to a message, or an empty string."""
    match = closest(word, choices)
    return f" (did you mean '{match}'?)" if match is not None and match != word else ""
