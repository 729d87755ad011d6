"""README.md and docs/*.md against the code: every documented `python SCRIPT.py ...` command is
one its script's parser accepts, and every relative link and image resolves.

Nothing is run. A command's words go to the script's own parsing function, which reads and
writes nothing: its flags, values, choices, mutually exclusive and required flags are checked,
and for the settings of config.py each value on its own (config.check_setting), but not whether
a session, photo or folder it names exists. Commands are collected from fenced code blocks and
from inline code in the prose, line numbers as in the file.
"""
import contextlib
import io
import os
import re
import shlex
import urllib.parse
from dataclasses import dataclass

import pytest

import bench
import complete
import config as cfg
import convert
import evaluate
import figures
import prepare
import serve
import train
import utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each script's argv -> its settings (a dict), without side effects.
PARSERS = {
    "train.py": lambda argv: train.parse_args(argv)[0],
    "complete.py": lambda argv: vars(complete.parse_args(argv)),
    "evaluate.py": lambda argv: vars(evaluate.parse_args(argv)),
    "serve.py": lambda argv: vars(serve.parse_args(argv)),
    "bench.py": lambda argv: vars(bench.build_parser().parse_args(argv)),
    "convert.py": lambda argv: vars(convert.parse_args(argv)),
    "prepare.py": lambda argv: vars(prepare.parse_args(argv)),
    "figures.py": lambda argv: vars(figures.parse_args(argv)),
}
# Scripts whose flags are config.py's settings, each value checked as Config.validate does.
CONFIG_SCRIPTS = ("train.py", "bench.py", "prepare.py")


def documents(root=REPO):
    """README.md and docs/*.md, as paths relative to `root`."""
    docs = os.path.join(root, "docs")
    pages = sorted(n for n in os.listdir(docs) if n.endswith(".md")) if os.path.isdir(docs) else []
    return ["README.md"] + [f"docs/{name}" for name in pages]


def read(path, root=REPO):
    with open(os.path.join(root, path), encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# Markdown: fenced blocks, prose, inline code, headings

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)")
SHELL_BLOCKS = ("", "bash", "sh", "shell", "console", "zsh")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)*)`(?!`)")


def split_markdown(text):
    """(fenced blocks as (language, first line number, lines), prose): the prose is the text
    with every line of a fenced block blanked, so that its line numbers stay the file's."""
    blocks, prose, fence = [], [], None
    for number, line in enumerate(text.split("\n"), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = (match.group(1), match.group(2).lower(), number + 1, [])
        elif fence is not None and re.fullmatch(rf" {{0,3}}{fence[0][0]}{{{len(fence[0])},}}\s*",
                                                line):
            blocks.append(fence[1:])
            fence = None
        elif fence is not None:
            fence[3].append(line)
        else:
            prose.append(line)
            continue
        prose.append("")
    if fence is not None:  # unclosed: code to the end, as CommonMark reads it
        blocks.append(fence[1:])
    return blocks, "\n".join(prose)


def line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def without_inline_code(prose):
    """The prose with each inline code span blanked (newlines kept)."""
    return INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)


ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def headings(prose):
    """The text of each heading, in order: `# Title` and Title underlined with === or ---."""
    lines = prose.split("\n")
    for i, line in enumerate(lines):
        atx = ATX_HEADING.match(line)
        if atx:
            yield atx.group(1) or ""
        elif (i and SETEXT_UNDERLINE.match(line) and lines[i - 1].strip()
              and not re.match(r"^\s*([-*+>|#]|\d+[.)])", lines[i - 1])):
            yield lines[i - 1].strip()


def github_anchor(heading):
    """The anchor GitHub gives a heading: its rendered text lowercased, punctuation other than
    hyphens and underscores removed, each space a hyphen."""
    parts = re.split(r"(`[^`]*`)", heading)
    text = ""
    for part in parts:
        if part.startswith("`"):
            text += part.strip("`")
        else:
            part = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", part)  # a link: its text
            part = re.sub(r"<[^>]+>", "", part)  # HTML tags
            text += re.sub(r"\*+|(?<!\w)_+|_+(?!\w)", "", part)  # emphasis
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text):
    """Every #anchor of a markdown text: its headings' (a repeated one suffixed -1, -2, ...)
    and its HTML ids and names."""
    _, prose = split_markdown(text)
    found = set()
    for heading in headings(prose):
        anchor = base = github_anchor(heading)
        count = 0
        while anchor in found:
            count += 1
            anchor = f"{base}-{count}"
        found.add(anchor)
    found.update(re.findall(r"""\b(?:id|name)=["']([^"']+)["']""", without_inline_code(prose)))
    return found


# ---------------------------------------------------------------------------------------------
# Commands


@dataclass(frozen=True)
class Command:
    file: str
    line: int
    text: str  # the command line as written
    script: str
    argv: tuple
    unsplit: str = ""  # why the shell could not split the line into words

    def __str__(self):
        return f"{self.file}:{self.line}"


OPERATORS = {"&&", "||", ";", ";;", "&", "|", "|&", "(", ")"}
SHELL_WORDS = {"do", "then", "else", "elif", "time", "!", "{", "exec", "nohup"}
PYTHON = re.compile(r"python(3(\.\d+)*)?")


def strip_comment(line):
    """The shell line without its comment: from a # that begins a word, outside quotes."""
    quote, escaped = None, False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_lines(lines, first):
    """(line number, text) of each logical shell line: comments removed, continuation lines
    (ending with a backslash) joined to the line they continue."""
    start, pending = None, []
    for number, line in enumerate(lines, first):
        line = strip_comment(re.sub(r"^\s*\$ ", "", line) if not pending else line)
        if start is None:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        text = " ".join(pending + [line.strip()]).strip()
        if text:
            yield start, text
        start, pending = None, []
    if pending:
        yield start, " ".join(pending)


def simple_commands(text):
    """The words of each simple command of a shell line: split at && || ; & | and parentheses,
    redirections and the variable assignments before the command left out."""
    text = re.sub(r"(?<=\s)\d+(?=[<>])", "", text)  # 2>&1: the descriptor goes with the > sign
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    words, redirected = [], False
    for word in list(lexer) + [";"]:
        if word in OPERATORS:
            while words and (re.match(r"^[A-Za-z_]\w*=", words[0]) or words[0] in SHELL_WORDS):
                words.pop(0)
            if words:
                yield words
            words, redirected = [], False
        elif redirected or set(word) <= set("<>&") and set(word) & set("<>"):
            redirected = True  # what follows a redirection is no argument
        else:
            words.append(word)


def python_commands(file, number, text):
    """The `python SCRIPT.py ...` commands of one shell line (`python -m ...` left out)."""
    try:
        found = list(simple_commands(text))
    except ValueError as error:  # an unclosed quote: a command if it names a script
        script = re.search(r"(?:^|[\s;&|(])python[\d.]*\s+([\w.-]+\.py)(?:\s|$)", text)
        if script:
            yield Command(file, number, text, script.group(1), (), unsplit=str(error))
        return
    for words in found:
        if (len(words) >= 2 and PYTHON.fullmatch(words[0]) and words[1].endswith(".py")
                and os.path.dirname(os.path.normpath(words[1])) == ""):
            yield Command(file, number, text, os.path.normpath(words[1]), tuple(words[2:]))


def commands(file, text):
    """Every documented command of a markdown text: in its shell code blocks, and in the inline
    code of its prose (which may run over several lines)."""
    blocks, prose = split_markdown(text)
    found = []
    for language, first, lines in blocks:
        if language in SHELL_BLOCKS:
            for number, line in shell_lines(lines, first):
                found += python_commands(file, number, line)
    for match in INLINE_CODE.finditer(prose):
        code = " ".join(match.group(1).split())
        found += python_commands(file, line_of(prose, match.start()), strip_comment(code))
    return sorted(found, key=lambda c: c.line)


def rejection(command):
    """What the script's parser refuses in the command, in its own words; None if it accepts
    it. `--help` is accepted."""
    if command.unsplit:
        return f"not a shell command line: {command.unsplit}"
    ellipsis = [w for w in command.argv if w in ("...", "…")]
    if ellipsis:
        return f"{ellipsis[0]!r}: an ellipsis for other arguments, not a command line's word"
    brackets = [w for w in command.argv if w.startswith("[") or w.endswith("]")]
    if brackets:
        return (f"{', '.join(map(repr, brackets))}: optional-argument notation [--flag VALUE],"
                " not a command line's words")
    if command.script not in PARSERS:
        return f"{command.script}: not one of the scripts {', '.join(PARSERS)}"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            settings = PARSERS[command.script](list(command.argv))
        if command.script in CONFIG_SCRIPTS:
            for name, value in settings.items():
                if name in cfg.FIELDS:
                    cfg.check_setting(name, value)
    except SystemExit as exit:
        if exit.code == 0:
            return None
        message = errors.getvalue().strip().split("\n")[-1]
        return re.sub(r"^.*?: error: ", "error: ", message) or f"exit status {exit.code}"
    except utils.UserError as error:
        return f"error: {error}"
    return None


# ---------------------------------------------------------------------------------------------
# Links

LINK_TARGETS = [
    re.compile(r"\]\(\s*<?([^()\s<>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"),  # [t](x), ![t](x)
    re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)", re.M),  # [label]: x
    re.compile(r"""<(?:a|img|source)\b[^>]*?\b(?:href|src)=["']([^"']+)["']""", re.I),
]


def links(text):
    """(line number, target) of each link and image outside code."""
    _, prose = split_markdown(text)
    prose = without_inline_code(prose)
    found = sorted((m.start(1), m.group(1)) for pattern in LINK_TARGETS
                   for m in pattern.finditer(prose))
    return [(line_of(prose, offset), target) for offset, target in found]


def broken_links(file, root=REPO):
    """'FILE:LINE: target: why' for each relative link or image of `file` (relative to `root`)
    whose file is missing, or whose #anchor is no heading of its markdown file."""
    broken = []
    for number, target in links(read(file, root)):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        path = urllib.parse.unquote(path)
        if path.startswith("/"):  # GitHub reads it from the repository's root
            resolved = os.path.normpath(path.lstrip("/"))
        elif path:
            resolved = os.path.normpath(os.path.join(os.path.dirname(file), path))
        else:  # #anchor: this file's
            resolved = file
        why = None
        if resolved.split(os.sep)[0] == "..":
            why = f"outside the repository ({resolved})"
        elif not os.path.exists(os.path.join(root, resolved)):
            why = f"no such file or folder {resolved}"
        elif anchor and resolved.endswith(".md"):
            if urllib.parse.unquote(anchor) not in anchors(read(resolved, root)):
                why = f"no heading of {resolved} has the anchor #{anchor}"
        if why:
            broken.append(f"{file}:{number}: {target}: {why}")
    return broken


# ---------------------------------------------------------------------------------------------
# The tests


DOCUMENTS = documents()
COMMANDS = [c for file in DOCUMENTS for c in commands(file, read(file))]


def ids(found):
    """FILE:LINE, with -2, -3, ... for a second and third command on one line."""
    seen = {}
    result = []
    for command in found:
        seen[str(command)] = seen.get(str(command), 0) + 1
        result.append(str(command) + (f"-{seen[str(command)]}" if seen[str(command)] > 1 else ""))
    return result


@pytest.mark.parametrize("command", COMMANDS, ids=ids(COMMANDS))
def test_documented_command_is_accepted(command):
    problem = rejection(command)
    if problem:
        pytest.fail(f"{command}: {command.text}\n    refused: {problem}", pytrace=False)


@pytest.mark.parametrize("file", DOCUMENTS)
def test_links_and_images_resolve(file):
    broken = broken_links(file)
    if broken:
        pytest.fail("\n".join(broken), pytrace=False)


def test_every_script_is_documented():
    assert len([c for c in COMMANDS if c.file == "README.md"]) >= 10
    assert len(COMMANDS) >= 60
    assert sorted({c.script for c in COMMANDS}) == sorted(PARSERS)


DRIFTED = """# Guide

## Run it

```bash
pip install -r requirements.txt && python train.py --preset quick --session NAME \\
    --data-dir ~/photos photos2   # placeholders are values
TF_CONFIG='{"cluster": {"worker": ["a:1"]}}' python train.py --strategy multiworker &
python -m pytest -q tests --unknown
python train.py --tc many
python evaluate.py --session NAME --data-dir PHOTOS [--seed 0]
```

Then `python complete.py --session NAME
--export exported/` and `python complete.py --box 1,2,3,4`, or `python train.py ... --tc 0`;
not `python train.py --image-size 30`. See [the run](#run-it), [it again](#run-it-1),
[setup](guide.md#setup), [nothing](#nowhere), ![a figure](figures/none.png), the
[README](../README.md) and `[code](#in-code)`.

## Run it

```
# not a heading: [in code](#in-code)
```
"""


def test_a_drifted_document_fails(tmp_path):
    """The same functions find the commands and links of a small document, and refuse exactly
    the ones that are wrong."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(DRIFTED)
    (tmp_path / "README.md").write_text("See [the guide](docs/guide.md#run-it).\n")
    assert documents(str(tmp_path)) == ["README.md", "docs/guide.md"]
    found = commands("docs/guide.md", DRIFTED)
    assert [(c.line, c.script, c.argv) for c in found] == [
        (6, "train.py", ("--preset", "quick", "--session", "NAME", "--data-dir", "~/photos",
                         "photos2")),
        (8, "train.py", ("--strategy", "multiworker")),
        (10, "train.py", ("--tc", "many")),
        (11, "evaluate.py", ("--session", "NAME", "--data-dir", "PHOTOS", "[--seed", "0]")),
        (14, "complete.py", ("--session", "NAME", "--export", "exported/")),
        (15, "complete.py", ("--box", "1,2,3,4")),
        (15, "train.py", ("...", "--tc", "0")),
        (16, "train.py", ("--image-size", "30")),
    ]
    assert [rejection(c) for c in found] == [
        None,
        None,
        "error: argument --tc: invalid int value: 'many'",
        "'[--seed', '0]': optional-argument notation [--flag VALUE], not a command line's words",
        None,
        "error: --input and --output are required (or --export DIR)",
        "'...': an ellipsis for other arguments, not a command line's word",
        "error: --image-size: expected a positive multiple of 4, got 30",
    ]
    assert broken_links("docs/guide.md", str(tmp_path)) == [
        "docs/guide.md:17: guide.md#setup: no heading of docs/guide.md has the anchor #setup",
        "docs/guide.md:17: #nowhere: no heading of docs/guide.md has the anchor #nowhere",
        "docs/guide.md:17: figures/none.png: no such file or folder docs/figures/none.png",
    ]
    assert broken_links("README.md", str(tmp_path)) == []
    assert anchors(DRIFTED) == {"guide", "run-it", "run-it-1"}
