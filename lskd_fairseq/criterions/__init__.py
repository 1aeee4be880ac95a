"""lskd's fairseq criteria; importing this package registers them."""

from lskd_fairseq.criterions import label_smoothed_kd  # noqa: F401
from lskd_fairseq.criterions import sequence_distillation  # noqa: F401,E402
