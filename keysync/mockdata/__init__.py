"""Seeded mock data: realistic, messy, reproducible CSV exports and their ground truth.

SPEC.md "Mock data", docs/mock-data.md. ``generate`` writes one CSV per
configured source (A..E) and ``manifest.json``: which keys each system holds,
its duplicates and the exact lines that were corrupted, which is what later
stages are checked against. Every random choice comes from a ``random.Random``
seeded with a string such as ``"42:B:variants"``; nothing depends on hash
order or the clock, so the same seed gives byte-identical files anywhere.
"""

from keysync.mockdata.generator import GenerateResult, generate, stalled_system

__all__ = ["GenerateResult", "generate", "stalled_system"]
