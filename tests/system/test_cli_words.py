"""The CLI keeps headscale's command tree but speaks in its own words.

Walks `--help` of the real headscale binaries (v0.29.3, and v0.22.3 when cached; the test skips
without v0.29.3) and of ours, and checks that
  1. every command path, alias and flag (with its one-letter form) of headscale exists in ours,
     so scripts written for headscale keep working;
  2. no sentence of ours (command summaries, long help, flag descriptions) is one of headscale's,
     compared without case, punctuation or spacing, and none points at headscale's repository.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS_BIN = os.environ.get("HS_BIN", str(REPO / "build/headscale"))
REF_29 = os.environ.get("HEADSCALE_REF", str(REPO / ".cache/headscale/v0.29.3/headscale"))
REF_22 = str(REPO / ".cache/headscale/v0.22.3/headscale")

# Commands of headscale's that ours does not have yet, and why. Each is a gap to close, not a
# choice: the test still checks everything under and around them.
NOT_YET = {}
# Flags of headscale's that ours does not have yet, as (command path, flag).
FLAGS_NOT_YET = {}
# cobra's help command: "help COMMAND" is a command path of its own (ours has it too).
COBRA_COMMANDS = {"help"}
SECTIONS = {"Usage:": "usage", "Aliases:": "aliases", "Available Commands:": "commands",
            "Additional Commands:": "commands", "Flags:": "flags", "Global Flags:": "global"}
FLAG_RE = re.compile(r"(?:-(\w), )?--([\w-]+)(?: \w+)?\s{2,}(.*)")
MAX_COMMANDS = 200


def help_text(binary, path):
    r = subprocess.run([binary, *path, "--help"], capture_output=True, text=True, timeout=30,
                       env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"})
    assert r.returncode == 0, f"{binary} {' '.join(path)} --help: {r.stderr}"
    return r.stdout


def parse_help(text):
    """Splits cobra-layout help into its blocks: description, aliases, subcommands, flags."""
    page = {"description": [], "aliases": [], "commands": {}, "flags": {}}
    section = "description"
    for line in text.splitlines():
        s = line.strip()
        if s in SECTIONS:
            section = SECTIONS[s]
        elif section == "description":
            page["description"].append(line)
        elif not s:
            continue
        elif section == "aliases":
            page["aliases"] = [a.strip() for a in s.split(",")]
        elif section == "commands":
            name, _, summary = s.partition(" ")
            page["commands"][name] = summary.strip()
        elif section in ("flags", "global"):
            m = FLAG_RE.match(s)
            if m:
                desc = re.sub(r' \(default .*\)$', "", m.group(3))
                page["flags"][m.group(2)] = (m.group(1), desc, section)
            elif not line.startswith(" "):  # the closing line after the flags
                page["footer"] = s
                section = "footer"
    page["description"] = "\n".join(page["description"]).strip()
    return page


def walk(binary):
    """Every command path ("" for the root, "nodes list", ...) mapped to its parsed help."""
    tree, todo = {}, [()]
    while todo:
        assert len(tree) < MAX_COMMANDS, f"{binary}: command tree larger than {MAX_COMMANDS}"
        path = todo.pop()
        page = parse_help(help_text(binary, path))
        tree[" ".join(path)] = page
        todo += [path + (c,) for c in page["commands"] if c not in COBRA_COMMANDS]
    return tree


def sentences(tree):
    """Every sentence of every page: summaries, long help split at sentence ends, flag texts."""
    out = []
    for path, page in tree.items():
        out += [(path, s) for s in page["commands"].values()]
        out += [(path, s) for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", page["description"])]
        out += [(path, d) for _, d, _ in page["flags"].values()]
        if "footer" in page:
            out.append((path, page["footer"]))
    return [(p, s) for p, s in out if normalise(s)]


def normalise(sentence):
    return " ".join(re.sub(r"[^a-z0-9]+", " ", sentence.lower()).split())


def references():
    refs = [b for b in (REF_29, REF_22) if os.access(b, os.X_OK)]
    if REF_29 not in refs:
        pytest.skip(f"reference headscale not built: {REF_29} (tests/lib/install-headscale.sh)")
    return refs


@pytest.fixture(scope="module")
def ours():
    return walk(OURS_BIN)


@pytest.fixture(scope="module")
def theirs():
    return {b: walk(b) for b in references()}


def test_every_headscale_command_alias_and_flag_exists(ours, theirs):
    missing = []
    for binary, tree in theirs.items():
        version = Path(binary).parent.name
        for path, page in tree.items():
            if path in NOT_YET:
                continue
            mine = ours.get(path)
            if mine is None:
                missing.append(f"{version}: command '{path}'")
                continue
            missing += [f"{version}: alias '{a}' of '{path}'" for a in page["aliases"]
                        if a not in mine["aliases"]]
            for flag, (short, _, _) in page["flags"].items():
                if (path, flag) in FLAGS_NOT_YET:
                    continue
                have = mine["flags"].get(flag)
                if have is None:
                    missing.append(f"{version}: flag --{flag} of '{path}'")
                elif have[0] != short:
                    missing.append(f"{version}: --{flag} of '{path}' is -{have[0]}, not -{short}")
    assert not missing, "\n".join(missing)


def test_not_yet_lists_only_real_gaps(ours, theirs):
    # An entry that ours has gained (or headscale never had) must leave the lists.
    all_theirs = {p for tree in theirs.values() for p in tree}
    stale = [p for p in NOT_YET if p in ours or p not in all_theirs]
    stale += [f"{p} --{f}" for p, f in FLAGS_NOT_YET
              if p in ours and f in ours[p]["flags"]]
    assert not stale, stale


def test_no_sentence_is_headscales(ours, theirs):
    their_sentences = {normalise(s) for tree in theirs.values() for _, s in sentences(tree)}
    assert len(their_sentences) > 50, "reference help did not parse"
    copied = {}
    for path, s in sentences(ours):
        if normalise(s) in their_sentences:
            copied.setdefault(s, f"{path or 'headscale'}: {s!r}")
    copied = sorted(copied.values())
    assert not copied, "sentences copied from headscale:\n" + "\n".join(copied)


def test_no_text_points_at_headscales_repository(ours):
    for path in ours:
        text = help_text(OURS_BIN, path.split())
        assert "github.com/juanfont" not in text, path
    for src in (REPO / "core/cli").glob("*.[ch]"):
        assert "github.com/juanfont" not in src.read_text(), src


# Standard HTTP reason phrases: in both binaries because both speak HTTP.
SHARED_PHRASES = {"Method Not Allowed", "Internal Server Error"}


def message_pieces():
    """Text of every string literal in core/cli, cut at printf conversions: (file:line, piece)."""
    for src in sorted((REPO / "core/cli").glob("*.c")):
        text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), src.read_text(),
                      flags=re.S)
        for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', text):
            literal = m.group(1).replace('\\"', '"').replace("\\n", "\n")
            for piece in re.split(r"%[-0-9.*]*[a-zA-Z]+", literal):
                yield f"{src.name}:{text.count(chr(10), 0, m.start()) + 1}", piece.strip()


def test_no_message_is_headscales():
    # Go keeps string constants as plain bytes in the binary, so a sentence of ours of three
    # words or more that occurs there was most likely taken from headscale.
    blobs = [Path(b).read_bytes() for b in references()]
    copied = [f"{where}: {piece!r}" for where, piece in message_pieces()
              if len(piece.split()) >= 3 and piece not in SHARED_PHRASES
              and any(piece.encode() in blob for blob in blobs)]
    assert not copied, "messages copied from headscale:\n" + "\n".join(copied)
