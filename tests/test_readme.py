"""Every command in the README's and docs' shell blocks exists, with the options it passes.

- lskd's console scripts: every ``--option`` on the line appears in that command's ``--help``;
- fairseq's commands: the line parses with fairseq's own parser, the plugin loaded (fairseq's
  ``--help`` lists only its generic options, so the parser is the real check);
- ``bash FILE`` / ``make TARGET``: the file or target exists;
- ``python SCRIPT.py`` / ``python -m MODULE`` / ``torchrun ... -m MODULE`` (in shell blocks, and the
  inline ``python benchmarks/...`` commands of the prose): the script exists and every ``--option``
  is one its argparse parser lists in ``--help``;
- a few commands that are not lskd's (pip, sacrebleu, fairseq-preprocess, ...) are named in
  ``NOT_OURS``; a command of any other kind fails the test.

Options are matched exactly, as whole option names (``--k`` is not accepted because ``--kd`` is).
"""

import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(REPO, "docs"))
                              if f.endswith(".md"))
BIN = os.path.dirname(sys.executable)
FAIRSEQ = {"fairseq-train": "train", "fairseq-generate": "generate", "fairseq-interactive": "interactive"}


def _console_scripts():
    text = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
    return set(re.findall(r'"(lskd-[a-z-]+) = ', text))


def _commands():
    out = []
    for doc in DOCS:
        text = open(os.path.join(REPO, doc), encoding="utf-8").read()
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
            block = re.sub(r"\\\n\s*", " ", block)
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if not line or line.startswith("#"):
                    continue
                out.append((doc, line))
    return out


def _words(line):
    # $(...) and $VAR stand for a path; the option names are what is checked
    line = re.sub(r"\$\([^)]*\)", "X", line)
    line = line.replace('"$LSKD"', os.path.join(REPO, "lskd_fairseq")).replace("$LSKD", os.path.join(REPO, "lskd_fairseq"))
    line = re.sub(r"\[([^\]]*)\]", r"\1", line)  # [--optional ...] groups in synopses
    words = shlex.split(line)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
        words.pop(0)
    return words


COMMANDS = _commands()


def _inline_python_commands():
    """``python benchmarks/...`` commands quoted inline in the prose (possibly wrapped over lines)."""
    out = []
    for doc in DOCS:
        text = open(os.path.join(REPO, doc), encoding="utf-8").read()
        text = re.sub(r"```.*?```", "", text, flags=re.S)  # the shell blocks are COMMANDS
        for span in re.findall(r"`(python benchmarks/[^`]*)`", text):
            out.append((doc, " ".join(span.split())))
    return out


INLINE = _inline_python_commands()

# commands the docs show that are not lskd's (fairseq-hydra-train has its own test)
NOT_OURS = {"cd", "export", "pip", "sacrebleu", "fairseq-preprocess", "fairseq-hydra-train"}


def _help_options(text):
    """The option names an argparse ``--help`` lists: its usage synopsis and its option rows
    (not the words of the descriptions, which may mention options of other commands)."""
    usage, _, rest = text.partition("\n\n")
    names = set(re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", usage))
    for row in rest.splitlines():
        if re.match(r"^\s+-", row):
            head = re.split(r"\s{2,}", row.strip())[0]
            names.update(re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", head))
    return names


def _check_options(doc, line, what, help_argv, opts):
    r = _help(tuple(help_argv))
    assert r.returncode == 0, f"{doc}: {what} --help failed: {r.stderr[-500:]}"
    known = _help_options(r.stdout)
    assert "--help" in known, f"{doc}: could not read the options of {what} from its --help: {r.stdout[:500]}"
    missing = [o for o in opts if o not in known]
    assert not missing, f"{doc}: {what} has no option(s) {missing} (line: {line})"


def _check_python(doc, line, args):
    """``python`` arguments: ``SCRIPT.py ...`` or ``-m MODULE ...``; the options after it exist."""
    if args[:1] == ["-m"] and len(args) > 1:
        target, rest, argv = args[1], args[2:], [sys.executable, "-m", args[1]]
    else:
        assert args and args[0].endswith(".py"), f"{doc}: a python command of an unknown form: {line}"
        path = os.path.join(REPO, args[0])
        assert os.path.isfile(path), f"{doc}: no script {args[0]} (line: {line})"
        target, rest, argv = args[0], args[1:], [sys.executable, path]
    opts = [w.split("=")[0] for w in rest if w.startswith("--")]
    _check_options(doc, line, target, argv + ["--help"], opts)


@functools.lru_cache(maxsize=None)
def _help(argv):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=300)


def test_the_docs_have_commands():
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("doc,line", COMMANDS, ids=[f"{d}:{ln[:50]}" for d, ln in COMMANDS])
def test_documented_command_exists_with_its_options(doc, line):
    if re.match(r"^[A-Z_]+=\$\(", line):  # LSKD=$(python -c ...): a shell assignment
        return
    words = [w for w in _words(line) if w != "..."]  # "..." marks an elision in the docs
    if not words:
        return
    cmd = words[0]
    scripts = _console_scripts()
    # a quoted word with spaces is a value (--slurm-sbatch-args '--qos=high --account=lab'), not an option
    opts = [w.split("=")[0] for w in words[1:] if w.startswith("--") and not re.search(r"\s", w)]
    if cmd == "make":
        makefile = open(os.path.join(REPO, "Makefile"), encoding="utf-8").read()
        for target in (w for w in words[1:] if "=" not in w and not w.startswith("-")):
            assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"{doc}: no make target {target!r}"
    elif cmd == "bash":
        assert os.path.isfile(os.path.join(REPO, words[1])), f"{doc}: no file {words[1]}"
    elif cmd in scripts:
        sub = [w for w in words[1:3] if not w.startswith("-")][:1] if cmd == "lskd-bleu" or cmd == "lskd-plot" else []
        _check_options(doc, line, cmd, [os.path.join(BIN, cmd)] + sub + ["--help"], opts)
    elif cmd in FAIRSEQ:
        args = words[1:]
        if cmd == "fairseq-train" and "..." in line and "--arch" not in args:
            args += ["--arch", "transformer"]  # an elided command: its options are still checked
        code = (
            "import sys\n"
            "from fairseq import options\n"
            f"kind = {FAIRSEQ[cmd]!r}\n"
            "parser = {'train': options.get_training_parser, 'generate': options.get_generation_parser,\n"
            "          'interactive': options.get_interactive_generation_parser}[kind]()\n"
            "options.parse_args_and_arch(parser, input_args=sys.argv[1:])\n"
        )
        r = subprocess.run([sys.executable, "-c", code] + args, capture_output=True, text=True,
                           cwd=REPO, timeout=300)
        assert r.returncode == 0, f"{doc}: {cmd} does not parse: {r.stderr[-800:]}"
    elif cmd == "python":
        _check_python(doc, line, words[1:])
    elif cmd == "torchrun":
        # torchrun's own options, then -m MODULE and the module's options
        assert "-m" in words, f"{doc}: a torchrun command without -m MODULE: {line}"
        _check_python(doc, line, words[words.index("-m"):])
    elif cmd in NOT_OURS:
        return
    elif cmd.startswith("lskd-"):
        pytest.fail(f"{doc}: {cmd} is not a console script of setup.py")
    else:
        pytest.fail(f"{doc}: a command of a kind this test does not check: {cmd!r} (line: {line}); "
                    f"check it here or name it in NOT_OURS")


def test_the_prose_quotes_benchmark_commands():
    assert len(INLINE) >= 3, INLINE


@pytest.mark.parametrize("doc,line", INLINE, ids=[f"{d}:{ln[:50]}" for d, ln in INLINE])
def test_inline_benchmark_command_exists_with_its_options(doc, line):
    _check_python(doc, line, _words(line)[1:])
