"""The floor for the scale scenario: read a JSON Lines file line by line with orjson and keep nothing."""

from __future__ import annotations

import sys

import orjson

with open(sys.argv[1], "rb") as handle:
    for raw in handle:
        orjson.loads(raw)
