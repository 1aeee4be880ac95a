"""The warnings lskd's study commands silence, by name: deprecation notices from the libraries
they drive (fairseq, torch, hydra/omegaconf, matplotlib), which a user cannot act on. Every
other warning is shown."""

import warnings

# (category, module regex) of the deprecation notices of the libraries the study imports
KNOWN = [
    (DeprecationWarning, r"(fairseq|hydra|omegaconf|pkg_resources|torch|torchvision|matplotlib)(\.|$)"),
    (FutureWarning, r"(fairseq|torch|torchvision)(\.|$)"),
    (PendingDeprecationWarning, r"(fairseq|torch)(\.|$)"),
]
# deprecation notices raised as UserWarning (by message)
KNOWN_MESSAGES = [
    r"torch\.nn\.utils\.weight_norm is deprecated",
    r".*`torch\.cuda\.amp\..*` is deprecated",
]


def silence_known_warnings() -> None:
    for category, module in KNOWN:
        warnings.filterwarnings("ignore", category=category, module=module)
    for message in KNOWN_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
