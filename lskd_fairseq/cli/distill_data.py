"""``lskd-distill-data``: sequence-level distillation data; see ``lskd_fairseq.distill``."""

import sys

from lskd_fairseq.distill import get_parser, main, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
