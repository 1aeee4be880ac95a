"""The warnings lskd silences, by name: notices of the libraries it drives (fairseq, hydra,
torch, matplotlib) that a user cannot act on, most of them deprecations inside those
libraries. Every other warning is shown: nothing here ignores a whole category.

In lskd's own processes ``silence_known_warnings()`` installs the filters. The processes lskd
starts (fairseq-train and fairseq-generate from the recipes and the study, the lskd tools, the
benchmarks) get ``subprocess_env()``: ``LSKD_QUIET_LIBRARY_WARNINGS=1``, on which the plugin
installs the same filters as it is imported (``lskd_fairseq/__init__.py``), and, for the one
notice raised while fairseq is imported before the plugin, an exact ``PYTHONWARNINGS`` entry
(category and module, as Python's ``-W`` matches them). A user's own ``PYTHONWARNINGS`` is kept.

    python -m lskd_fairseq.warning_filters --shell   # the two variables, for a bash script
"""

import os
import warnings

ENV = "LSKD_QUIET_LIBRARY_WARNINGS"

# (category, module regex) of the deprecation notices of the libraries lskd imports
KNOWN = [
    (DeprecationWarning, r"(fairseq|hydra|omegaconf|pkg_resources|torch|torchvision|matplotlib)(\.|$)"),
    (FutureWarning, r"(fairseq|torch|torchvision)(\.|$)"),
    (PendingDeprecationWarning, r"(fairseq|torch)(\.|$)"),
]
# notices raised as UserWarning, by the start of their message (measured in the recipes' and the
# study's logs, 6 Dec 2026: hydra's, which fairseq 0.12 calls the old way; torch's about fairseq's
# attention masks and about fairseq's pin_memory=True on a machine without an accelerator)
KNOWN_MESSAGES = [
    r"torch\.nn\.utils\.weight_norm is deprecated",
    r".*`torch\.cuda\.amp\..*` is deprecated",
    r"\s*The version_base parameter is not specified",
    r"hydra\.experimental\.\w+\(\) is no longer experimental",
    r"\s*The strict flag in the compose API is deprecated",
    r"In '[\w/]+': Usage of deprecated keyword in package header",
    r"\s*'config' is validated against ConfigStore schema with the same name",
    r"Support for mismatched key_padding_mask and attn_mask is deprecated",
    r"'pin_memory' argument is set as true but no accelerator is found",
]
# (category, exact module) of the notices raised before lskd's code runs in a child process
AT_IMPORT = [
    ("FutureWarning", "torch.jit._script"),  # `torch.jit.script` is deprecated (fairseq's decorators)
]


def silence_known_warnings() -> None:
    for category, module in KNOWN:
        warnings.filterwarnings("ignore", category=category, module=module)
    for message in KNOWN_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


def pythonwarnings(existing: str = "") -> str:
    """``PYTHONWARNINGS`` for a child process: the user's entries, then the exact ones of ``AT_IMPORT``."""
    ours = [f"ignore::{category}:{module}" for category, module in AT_IMPORT]
    theirs = [e for e in existing.split(",") if e and e not in ours]
    return ",".join(theirs + ours)


def subprocess_env(env=None) -> dict:
    """A child process's environment (a copy of ``env``, or of this process's): the named filters."""
    env = dict(os.environ if env is None else env)
    env[ENV] = "1"
    env["PYTHONWARNINGS"] = pythonwarnings(env.get("PYTHONWARNINGS", ""))
    return env


if __name__ == "__main__":
    import shlex
    import sys

    if sys.argv[1:] != ["--shell"]:
        sys.exit("usage: python -m lskd_fairseq.warning_filters --shell")
    from lskd_fairseq import console

    env = subprocess_env()
    console.result(f"export {ENV}=1 PYTHONWARNINGS={shlex.quote(env['PYTHONWARNINGS'])}")
