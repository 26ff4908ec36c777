"""The results store's schema as numbered SQL files, applied in order by `pyti.store`.

`NNNN_name.sql` takes the schema from version NNNN - 1 to NNNN (`PRAGMA user_version`).
A shipped file never changes: a new schema is a new file. Statements are split on ";",
so a comment or string in these files must not contain one.
"""

from __future__ import annotations

from importlib.resources import files


def load() -> tuple[str, ...]:
    """The migrations' SQL, in order; checks the files are numbered 1, 2, ... without gaps."""
    scripts = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in files(__name__).iterdir()
        if entry.name.endswith(".sql")
    )
    for number, (name, _) in enumerate(scripts, start=1):
        if not name.startswith(f"{number:04d}_"):
            raise RuntimeError(f"migration {name} is out of sequence: expected {number:04d}_*")
    return tuple(sql for _, sql in scripts)


MIGRATIONS = load()
