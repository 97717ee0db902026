"""The product speaks of itself only: no file in the repository (code, comments, help, README,
docs, model card, changelog) talks about how it was developed: work sessions, lent machines,
issue numbers of our own tracker or a development folder outside the repository."""
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = [
    (r"\b(this|that|a|each|every|next|last|previous|earlier|later|work|development|one) sessions?\b", "a work session"),
    (r"\bsessions? \d+", "a numbered work session"),
    (r"(?<![\w#/])issues? #?\d+", "an issue number of the project's tracker"),
    (r"\.\./shared|\bshared/data\b", "a development folder outside the repository"),
    (r"\blent\b", "a lent machine"),
]
TEXT = {".py", ".md", ".sh", ".toml", ".yaml", ".yml", ".txt", ".cfg", ".csv", ".html", ".json", ""}


def test_no_file_speaks_of_how_the_product_was_developed():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if name == "tests/project/test_product_words.py" or path.suffix not in TEXT or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for pattern, what in FORBIDDEN:
                if re.search(pattern, line, re.IGNORECASE):
                    found.append(f"{name}:{n}: {what}: {line.strip()[:100]}")
    assert not found, "\n".join(found)
