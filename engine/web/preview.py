"""Live preview of every page, byte-identical to what ``engine build`` writes."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("preview", __name__)
