"""lskd's fairseq criteria; importing this package registers them."""

from lskd_fairseq.criterions import label_smoothed_kd  # noqa: F401
