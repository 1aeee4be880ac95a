"""lskd_vision: image classification with the shared LS/KD loss math (lskd_fairseq.losses)."""
