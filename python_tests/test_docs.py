"""The user documentation works from a checkout alone: every relative link in README.md and
docs/*.md names a file (and heading) inside the repository, and README's Python example runs."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), with an optional "title"; and reference definitions [label]: target
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def links(text: str) -> list[str]:
    """The link targets of a Markdown text, outside code blocks and code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file: lower case, punctuation
    other than hyphens dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", markdown.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+\s+(.*?)\s*#*\s*$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.replace("`", "").lower()).replace(" ", "-") for h in headings}


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """What is wrong with each relative link of ``page`` (its ``text``, default: read), one line each."""
    problems = []
    for target in links(page.read_text(encoding="utf-8") if text is None else text):
        if EXTERNAL.match(target):
            continue  # a citation or web page, not a file of the project
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository (users have only the repository)")
        elif not file.exists():
            problems.append(f"{target}: no such file in the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: {file.name} has no heading with the anchor #{anchor}")
    return problems


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(page):
    assert broken_links(page) == []


def test_the_semantics_page_exists_and_readme_links_it():
    assert (ROOT / "docs" / "semantics.md").is_file()
    assert "docs/semantics.md" in links((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_link_check_finds_links_that_leave_the_repository_or_lead_nowhere():
    text = ("[spec](../../shared/SPEC.md) [gone](missing.md) [a](semantics.md#no-such-heading) "
            "[b](semantics.md#c-attribution-graph) [web](https://arxiv.org) `[code](nowhere.md)`\n"
            "```\n[block](nowhere.md)\n```\n[ref]: ../README.md\n")
    assert broken_links(ROOT / "docs" / "page.md", text) == [
        "../../shared/SPEC.md: outside the repository (users have only the repository)",
        "missing.md: no such file in the repository",
        "semantics.md#no-such-heading: semantics.md has no heading with the anchor #no-such-heading"]


# -- README's Python example ------------------------------------------------------------------
# What a user replaces with their own files; the test uses stand-ins (random weights, two tiny
# images, no worker processes). Each must be in the example, so that the test follows it.
STAND_INS = {'inception_v1("inception5h.pt")': "inception_v1()", '"my_images"': None, "num_workers=4": "num_workers=0"}


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python\n", 1)[1]
    return re.search(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL).group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    from PIL import Image

    images = tmp_path / "images"
    for i, name in enumerate(("cat", "dog")):
        (images / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), (60 * i, 120, 200 - 60 * i)).save(images / name / "0.png")
    code = readme_example()
    for text, stand_in in STAND_INS.items():
        assert text in code, f"README's example no longer has {text}: update STAND_INS"
        code = code.replace(text, stand_in or repr(str(images)))
    monkeypatch.chdir(tmp_path)  # the example saves to run1/
    namespace = {}
    exec(compile(code, "README.md example", "exec"), namespace)
    result = namespace["result"]
    assert result.class_names == ["cat", "dog"] and result.images_per_class.tolist() == [1, 1]
    assert namespace["same"] == result and (tmp_path / "run1" / "manifest.json").is_file()
