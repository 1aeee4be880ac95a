"""Is bf16 *autocast* (float32 weights) a better CPU precision for fairseq than fairseq's
whole-model ``--bf16``? (issue 18 §2: offer it as a plugin option only if it proves faster or
more accurate.)

    python benchmarks/bench_nmt_autocast.py [--dim 128] [--vocab 4000] [--rounds 5] [--steps 5]

One training step of a fairseq ``TransformerModel`` of the study's cpu teacher shape (3+3
layers, d=128, ffn 4d, 4 heads, shared embeddings, dropout 0.2; the Multi30k cpu recipe's
4,000-piece vocabulary; 146 sentences of 14 tokens, about the recipe's 2,048 tokens a batch):
forward, label-smoothed cross-entropy on float32 logits, backward, Adam. Three copies of the
same initial model, one per mode:

- ``fp32``: float32 throughout;
- ``bf16``: the model cast to bfloat16, as fairseq's trainer does under ``--bf16`` (its
  float32 master weights in ``FP16Optimizer`` are left out: an upper bound on its speed);
- ``autocast``: float32 weights, forward under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

One thread; the modes alternate within every round so that other load hits all three, and each
figure is the median over rounds. Prints the CPU (torch capability, AMX) and one ``RATIO`` line
per mode: float32 step time / that mode's step time.
"""

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F


def build(dim: int, vocab: int):
    from lskd_fairseq.warning_filters import silence_known_warnings

    silence_known_warnings()  # fairseq's import-time notices, by name
    from fairseq.data import Dictionary
    from fairseq.models.transformer import TransformerModel, base_architecture

    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    ns = argparse.Namespace(encoder_layers=3, decoder_layers=3, encoder_embed_dim=dim, decoder_embed_dim=dim,
                            encoder_ffn_embed_dim=4 * dim, decoder_ffn_embed_dim=4 * dim,
                            encoder_attention_heads=4, decoder_attention_heads=4, share_all_embeddings=True,
                            dropout=0.2, max_source_positions=256, max_target_positions=256)
    base_architecture(ns)

    class _Task:
        source_dictionary = d
        target_dictionary = d

    return TransformerModel.build_model(ns, _Task()), len(d)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=128, help="model width (the study's teacher: 128)")
    ap.add_argument("--vocab", type=int, default=4000, help="vocabulary size (the cpu recipe's SPM_VOCAB)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; each runs every mode once")
    ap.add_argument("--steps", type=int, default=5, help="training steps per mode and round")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from lskd_vision.precision import cpu_bf16_description

    print(f"CPU: {cpu_bf16_description()}; one thread")
    model, vocab = build(a.dim, a.vocab)
    bsz, length = 146, 14
    src = torch.randint(4, vocab, (bsz, length))
    tgt = torch.randint(4, vocab, (bsz, length))
    lens = torch.full((bsz,), length)
    models = {"fp32": model, "bf16": copy.deepcopy(model).to(torch.bfloat16), "autocast": copy.deepcopy(model)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}

    def step(mode):
        opts[mode].zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
            out, _ = models[mode](src, lens, tgt)
        loss = F.cross_entropy(out.float().view(-1, vocab), tgt.view(-1), label_smoothing=0.1)
        loss.backward()
        opts[mode].step()

    for mode in models:  # warm-up
        for _ in range(2):
            step(mode)
    times = {k: [] for k in models}
    for _ in range(a.rounds):
        for mode in models:
            t = time.perf_counter()
            for _ in range(a.steps):
                step(mode)
            times[mode].append((time.perf_counter() - t) / a.steps)
    base = statistics.median(times["fp32"])
    for mode, ts in times.items():
        med = statistics.median(ts)
        print(f"{mode:9s} {med * 1000:8.1f} ms/step  {bsz * length / med:7.0f} target tokens/s")
    for mode in ("bf16", "autocast"):
        print(f"RATIO nmt_step_fp32_over_{mode}_d{a.dim} {base / statistics.median(times[mode]):.3f}")


if __name__ == "__main__":
    main()
