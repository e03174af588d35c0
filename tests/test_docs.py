"""The README and docs/*.md tell the truth about what they name.

- every ``pixperfect ...`` command line (in fenced code blocks and inline code) names a real
  subcommand and parses with the real parser (``pixperfect.cli.build_parser``); a synopsis
  (``[--opt X]``, ``A|B``, ``...``) names only options that subcommand has;
- every ``make`` target named exists in the Makefile;
- every repository file a command names (configs, slurm scripts, scripts, benchmarks)
  exists, and every option given to a benchmark or script is one it defines;
- every relative link and image resolves to a file (and a ``#anchor`` to a heading);
- every docs page is linked from the README or another page, and says first what it is for;
- the README stays under 12,000 characters and its picture under 150 KB;
- docs/commands.md names every option of every subcommand (read from the parser);
- nothing in the repository cites the method spec it was built from, an issue number or the
  workplace's docs folder, all outside the repository: the method is docs/method.md.

Placeholders (IMG, OUT, CKPT, <jobid>) are fine as values: only the parse is checked here;
``tests/test_preflight.py`` runs preflight on every documented launch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT

from pixperfect.cli import build_parser

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 12_000
PICTURE = ROOT / "docs" / "img" / "before_after.png"
PICTURE_LIMIT = 150 * 1024

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
NOT_SHELL = ("text", "python", "mermaid", "yaml", "json")  # fenced blocks without commands
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SYNOPSIS = re.compile(r"\[|\]|\||\.\.\.")
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")
REPO_DIRS = ("configs/", "slurm/", "scripts/", "benchmarks/", "examples/", "weights/", "docs/")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def shell_lines(text: str) -> list[str]:
    """Candidate command lines of a markdown page: each line of its fenced blocks but
    text/python/mermaid ones (line continuations joined, comments dropped, ``a; b`` split)
    and each inline code span."""
    lines = []
    for info, block in FENCE.findall(text):
        if info.strip().lower() in NOT_SHELL:
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            lines += [part.strip() for part in re.split(r";|&&", line) if part.strip()]
    for span in INLINE.findall(FENCE.sub("", text)):
        lines.append(span.replace("\\|", "|").strip())
    return lines


def _words(line: str) -> list[str]:
    """The line's words without leading ``VAR=value`` assignments and a ``$`` prompt."""
    words = shlex.split(line)
    while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] == "$"):
        words = words[1:]
    return words


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(page, line, words) of every command line the pages show, for the programs checked
    here: pixperfect, make, sbatch, tensorboard, python and the repository's scripts."""
    found = []
    checked = ("pixperfect", "make", "sbatch", "tensorboard")
    for page in PAGES:
        for line in shell_lines(page.read_text()):
            try:
                words = _words(line)
            except ValueError:  # unbalanced quotes: prose in backticks, not a command
                continue
            if not words:
                continue
            program = words[0]
            is_script = program.endswith("python") or (
                program.startswith(REPO_DIRS) and program.endswith((".py", ".sh"))
            )
            if (program in checked and len(words) > 1) or is_script:
                found.append((_rel(page), line, words))
    return found


COMMANDS = documented_commands()
PIXPERFECT = [c for c in COMMANDS if c[2][0] == "pixperfect"]


def _ids(commands):
    return [f"{page}:{line[:70]}" for page, line, _ in commands]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_parser(args: list[str]) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    """(the deepest subcommand's parser, the subcommand path, the remaining words)."""
    parser, path = build_parser(), []
    while args and args[0] in _subparsers(parser):
        parser = _subparsers(parser)[args[0]]
        path.append(args[0])
        args = args[1:]
    return parser, path, args


@pytest.mark.parametrize("page, line, words", PIXPERFECT, ids=_ids(PIXPERFECT))
def test_every_documented_pixperfect_command_exists_and_parses(page, line, words):
    parser, path, rest = _command_parser(words[1:])
    where = f"{page}: `{line}`"
    if rest and not rest[0].startswith("-") and _subparsers(parser):
        pytest.fail(f"{where}: no subcommand {rest[0]!r} (have: {sorted(_subparsers(parser))})")
    if not path and not {"--help", "-h", "--version"} & set(rest):
        pytest.fail(f"{where}: names no subcommand of pixperfect")
    if not rest:
        return  # a bare subcommand named in prose, e.g. `pixperfect shards verify`
    if SYNOPSIS.search(" ".join(rest)):
        known = set(parser._option_string_actions)
        unknown = [o for o in OPTION.findall(" ".join(rest)) if o not in known]
        assert not unknown, f"{where}: `pixperfect {' '.join(path)}` has no option {unknown}"
        return
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as exit:
            if exit.code not in (0, None):  # --help and --version exit 0
                pytest.fail(f"{where}: the parser refuses it:\n{err.getvalue()}")


def _repo_paths(words: list[str]) -> list[str]:
    """Words (or ``--opt=value`` values) naming a file or folder of the repository."""
    paths = []
    for word in words:
        value = word.split("=", 1)[1] if word.startswith("--") and "=" in word else word
        if value.startswith(REPO_DIRS) and not any(c in value for c in "{}*<>"):
            paths.append(value.rstrip(".,:;)"))
    return paths


@pytest.mark.parametrize("page, line, words", COMMANDS, ids=_ids(COMMANDS))
def test_every_repository_file_a_command_names_exists(page, line, words):
    missing = [p for p in _repo_paths(words) if not (ROOT / p).exists()]
    assert not missing, f"{page}: `{line}` names {missing}, not in the repository"


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m for m in re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M)}


MAKE = [c for c in COMMANDS if c[2][0] == "make"]


@pytest.mark.parametrize("page, line, words", MAKE, ids=_ids(MAKE))
def test_every_make_target_named_exists(page, line, words):
    targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    missing = [t for t in targets if t not in _makefile_targets()]
    assert not missing, f"{page}: `{line}`: no Makefile target {missing}"


SCRIPTS = [
    c
    for c in COMMANDS
    if (c[2][0].endswith("python") and len(c[2]) > 1) or c[2][0].startswith(REPO_DIRS)
]


@pytest.mark.parametrize("page, line, words", SCRIPTS, ids=_ids(SCRIPTS))
def test_every_documented_script_exists_and_defines_the_options_given(page, line, words):
    script = words[1] if words[0].endswith("python") else words[0]
    path = ROOT / script
    assert path.is_file(), f"{page}: `{line}`: {script} does not exist"
    source = path.read_text()
    args = words[2:] if words[0].endswith("python") else words[1:]
    if path.suffix == ".py":
        options = [w.split("=", 1)[0] for w in args if w.startswith("--")]
        missing = [o for o in options if f'"{o}"' not in source]
        assert not missing, f"{page}: `{line}`: {script} defines no option {missing}"
    elif args and not args[0].startswith("-"):  # a shell script's subcommand: up, down, ...
        assert re.search(rf"^\s*{re.escape(args[0])}\)", source, re.M), (
            f"{page}: `{line}`: {script} has no subcommand {args[0]!r}"
        )


SBATCH = [c for c in COMMANDS if c[2][0] == "sbatch"]


@pytest.mark.parametrize("page, line, words", SBATCH, ids=_ids(SBATCH))
def test_every_sbatch_command_submits_a_script_of_the_repository(page, line, words):
    scripts = [w for w in words if w.endswith(".sbatch")]
    assert scripts, f"{page}: `{line}` submits no .sbatch script"
    assert all((ROOT / s).is_file() for s in scripts), f"{page}: `{line}`: no such script"


def test_every_benchmark_script_is_in_benchmarks_md():
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    missing = [_rel(p) for p in sorted((ROOT / "benchmarks").glob("*.py")) if _rel(p) not in page]
    assert not missing, f"docs/benchmarks.md does not mention {missing}"


def test_tensorboard_the_docs_run_is_installed():
    assert any(c[2][0] == "tensorboard" for c in COMMANDS)
    assert importlib.util.find_spec("tensorboard") is not None


def test_the_collector_finds_the_commands_people_copy():
    """Guards against a collector that silently finds nothing."""
    lines = [" ".join(words) for _, _, words in COMMANDS]
    readme = [" ".join(words) for page, _, words in COMMANDS if page == "README.md"]
    for expected in ("make demo", "make test"):
        assert expected in readme, f"README.md must show `{expected}`"
    for start in (
        "pixperfect shards build",
        "pixperfect shards verify",
        "pixperfect train",
        "pixperfect evaluate",
        "pixperfect export",
        "pixperfect refine",
        "pixperfect simulate",
        "pixperfect preflight",
        "pixperfect config",
        "sbatch",
        "make bench",
        "make gpu-check",
    ):
        assert any(line.startswith(start) for line in lines), f"no documented `{start}`"
    assert len(PIXPERFECT) >= 30


def test_the_readme_is_under_12000_characters_and_its_picture_small():
    assert len(README.read_text()) < README_LIMIT
    assert PICTURE.is_file() and "docs/img/before_after.png" in README.read_text()
    assert PICTURE.stat().st_size < PICTURE_LIMIT


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return found


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return [t for t in LINK.findall(INLINE.sub("", text)) if not re.match(r"^[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=[_rel(p) for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {_rel(path)}")
    assert not broken, f"{_rel(page)}:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    linked = set()
    for page in PAGES:
        for target in _links(page):
            file = target.partition("#")[0]
            if file and (page.parent / file).resolve() != page.resolve():
                linked.add((page.parent / file).resolve())
    orphans = [_rel(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages no page links to: {orphans}"


@pytest.mark.parametrize("page", PAGES[1:], ids=[_rel(p) for p in PAGES[1:]])
def test_every_docs_page_starts_with_what_it_is_for(page):
    paragraphs = [p.strip() for p in page.read_text().split("\n\n") if p.strip()]
    assert paragraphs[0].startswith("# "), f"{_rel(page)} starts with its title"
    assert re.match(r"(?i)what this page is for", paragraphs[1]), (
        f"{_rel(page)}: the paragraph after the title should say what the page is for"
    )


COMMANDS_PAGE = ROOT / "docs" / "commands.md"


def _every_parser(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(subcommand path, parser) of ``pixperfect`` itself and of every subcommand, nested
    ones (``shards build``) included."""
    yield path, parser
    for name, sub in _subparsers(parser).items():
        yield from _every_parser(sub, (*path, name))


def _options_commands_md_names() -> dict[tuple[str, ...], set[str]]:
    """The options each synopsis of commands.md names, per subcommand path (a subcommand
    with two synopses, as ``refine`` for a file and a folder, gets both)."""
    named: dict[tuple[str, ...], set[str]] = {}
    for span in INLINE.findall(COMMANDS_PAGE.read_text()):
        words = span.replace("\\|", "|").split()
        if words[:1] != ["pixperfect"]:
            continue
        _, path, rest = _command_parser(words[1:])
        named.setdefault(tuple(path), set()).update(OPTION.findall(" ".join(rest)))
    return named


PARSERS = list(_every_parser(build_parser()))


@pytest.mark.parametrize(
    "path, parser", PARSERS, ids=[" ".join(("pixperfect", *p)) for p, _ in PARSERS]
)
def test_commands_md_names_every_option_of_every_subcommand(path, parser):
    options = {
        o for action in parser._actions for o in action.option_strings if o.startswith("--")
    } - {"--help"}
    missing = sorted(options - _options_commands_md_names().get(path, set()))
    assert not missing, (
        f"docs/commands.md: the synopsis of `{' '.join(('pixperfect', *path))}` does not name "
        f"{missing}; add them to its row"
    )


# Citations that point outside the repository: the method spec the project was built from
# (its sections are docs/method.md's now), an issue tracker's numbers and the workplace's docs
# folder. Spelled in pieces so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\bMETH" + r"OD\b", r"(?i:\bissues? [0-9])", "shared/" + "docs"]))
CITING_TREES = (
    "src", "data_sim", "imageops", "docs", "benchmarks", "scripts", "configs", "tests",
    "examples", "slurm",
)  # fmt: skip
CITING_FILES = ("README.md", "Makefile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".sbatch", ".json"}


def _citing_files() -> list[Path]:
    files = [ROOT / name for name in CITING_FILES]
    for tree in CITING_TREES:
        files += [
            p
            for p in sorted((ROOT / tree).rglob("*"))
            if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name.endswith(".sbatch"))
        ]
    return [p for p in files if p.exists() and "__pycache__" not in p.parts]


def test_nothing_cites_a_file_or_an_issue_outside_the_repository():
    assert any(OUTSIDE.search(line) for line in ["the METH" + "OD section 3", "iss" + "ue 14"])
    found = [
        f"{_rel(path)}:{n}: {line.strip()}"
        for path in _citing_files()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, (
        "cite docs/method.md's sections (or a docs page), or say in words what is meant:\n"
        + "\n".join(found)
    )
