"""Errors lskd raises itself when a user's input cannot work.

Each is a ``ValueError`` (for callers that catch those) and an ``LskdError``:
the fairseq commands show it as one line, ``<command>: error: <message>``, and
exit with status 2, instead of a traceback (see ``fairseq_compat.apply``).
"""


class LskdError(ValueError):
    """A mistake in what the user gave lskd, explained in one line with its fix."""


class OptionError(LskdError):
    """Options that are out of range or that contradict each other."""


def run_tool(prog: str, parser, run, argv=None) -> int:
    """The ``main`` of lskd's NMT tools: parse, log to stderr, run; an ``LskdError``
    becomes one line, ``<prog>: error: <message>``, and exit status 2."""
    import logging
    import sys

    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stderr)
    from lskd_fairseq import console

    args = parser.parse_args(argv)
    console.configure(quiet=getattr(args, "quiet", False), progress=not getattr(args, "no_progress_bar", False))
    try:
        run(args)
    except LskdError as e:  # ArtifactError, TeacherError, OptionError
        console.error(prog, str(e))
        return 2
    return 0
