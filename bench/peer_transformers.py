#!/usr/bin/env python3
"""Peer benchmark: HF transformers + PEFT on the CPU, the same figures as `cahl-tui bench`.

Usage:
  peer_transformers.py make-qwen DIR          write a random Qwen2.5-0.5B-shape checkpoint (safetensors)
  peer_transformers.py make-from-gguf GGUF DIR  dequantize a GGUF (e.g. SmolLM2-135M Q4_1) to an HF folder
  peer_transformers.py bench DIR [--batches 1,8] [--train-batches 1,8] [--repeats 3] [--json OUT]
                            [--decode-lora 1]   (prefill and decode through the PEFT model)
  peer_transformers.py membw                  memory read bandwidth with torch's threads

Figures (medians of --repeats after a warm-up), matching engine/src/bench.rs:
  prefill 1xP            last-position logits only (logits_to_keep=1), tok/s
  decode batch B (total) generate() of 32 new tokens (top_p 0.9, top_k off, temperature 1,
                         no EOS stop) minus a prefill of the same batch, total tok/s
  LoRA forward+backward  PEFT LoRA r=8 alpha=16 on q,k,v,o, base frozen; B sequences of 64 prompt
                         + 64 completion tokens; log-probs of the completion tokens (logits of the
                         completion positions only), sum, backward, seconds
  peak RSS               ru_maxrss of the process (includes torch itself)
Not part of the test suite. Runs with torch's default CPU threads (all cores).
"""
import json
import os
import resource
import sys
import time


def make_qwen(out):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
        max_position_embeddings=4096, tie_word_embeddings=True, hidden_act="silu",
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)  # HF init: N(0, 0.02) linears/embeddings, norms at 1
    model.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out}")


def make_from_gguf(gguf, out):
    import torch
    from transformers import AutoModelForCausalLM

    d, f = os.path.split(os.path.abspath(gguf))
    from safetensors.torch import save_file

    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    # The GGUF loader marks the model as quantized; the weights are already dequantized to f32.
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    os.makedirs(out, exist_ok=True)
    cfg.save_pretrained(out)
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {out}")


def membw():
    import torch

    n = 512 * 1024 * 1024 // 4 * 4  # 2 GiB of f32
    x = torch.ones(n // 4 * 1, dtype=torch.float32)
    x.sum()
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        x.sum()
        dt = time.perf_counter() - t
        best = max(best, x.numel() * 4 / dt / 1e9)
    print(json.dumps({"threads": torch.get_num_threads(), "read_GBps": round(best, 2)}))


def median(v):
    s = sorted(v)
    return s[len(s) // 2]


def bench(path, batches, train_batches, repeats, out_json, decode_lora=False):
    import torch
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    cfg = model.config
    vocab = cfg.vocab_size
    P, N = 128, 32
    prompt = torch.tensor([[(i * 7919 + 13) % vocab for i in range(P)]])
    figures = []

    def fig(name, runs, unit):
        figures.append({"name": name, "value": median(runs), "unit": unit, "runs": runs})
        print(f"  {name:<34} {median(runs):>10.2f} {unit}  (runs: {', '.join(f'{r:.2f}' for r in runs)})",
              flush=True)

    def prefill(b):
        with torch.inference_mode():
            t = time.perf_counter()
            model(prompt.repeat(b, 1), use_cache=True, logits_to_keep=1)
            return time.perf_counter() - t

    lcfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    def peft_model():
        # B non-zero so the adapter path does real work (as in engine/src/bench.rs).
        pm = get_peft_model(model, lcfg)
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                with torch.no_grad():
                    p.fill_(1e-3)
        return pm

    pm = None
    if decode_lora:
        # Prefill and decode through the (unmerged) PEFT model, as TRL samples from a PEFT
        # policy without vLLM, and as cahl-tui's bench does (its `bench` adapter is active).
        pm = peft_model()
        pm.eval()
        model = pm

    prefill(1)
    fig(f"prefill 1x{P}", [P / prefill(1) for _ in range(repeats)], "tok/s")
    for b in batches:
        runs = []
        for r in range(repeats):
            pre = prefill(b)
            torch.manual_seed(r)
            with torch.inference_mode():
                t = time.perf_counter()
                out = model.generate(
                    prompt.repeat(b, 1), attention_mask=torch.ones(b, P, dtype=torch.long),
                    do_sample=True, top_p=0.9, top_k=0, temperature=1.0, max_new_tokens=N,
                    min_new_tokens=N, pad_token_id=0, eos_token_id=None)
                dt = time.perf_counter() - t - pre
            runs.append((out.shape[1] - P) * b / max(dt, 1e-9))
        fig(f"decode batch {b} (total)", runs, "tok/s")

    if pm is None:
        pm = peft_model()
    pm.train()
    T = 128
    half = T // 2
    for b in train_batches:
        p_ids = prompt[:, :half].repeat(b, 1)
        comp = torch.tensor([[(i * 31 + j * 17) % vocab for j in range(T - half)] for i in range(b)])
        ids = torch.cat([p_ids, comp], 1)
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            # Logits of the positions that predict completion tokens: T-half of them.
            logits = pm(input_ids=ids, logits_to_keep=T - half + 1).logits[:, :-1]
            lp = torch.log_softmax(logits.float(), -1).gather(-1, comp.unsqueeze(-1)).squeeze(-1)
            loss = -lp.sum()
            loss.backward()
            pm.zero_grad(set_to_none=True)
            runs.append(time.perf_counter() - t)
        fig(f"LoRA forward+backward {b}x{T}", runs, "s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"  {'peak RSS':<34} {peak / 1e9:>10.2f} GB")
    report = {"model": path, "peer": f"transformers {__import__('transformers').__version__} + peft "
              f"{__import__('peft').__version__}, torch {torch.__version__}",
              "threads": torch.get_num_threads(), "figures": figures, "peak_rss_bytes": peak}
    if out_json:
        with open(out_json, "w") as f:
            json.dump(report, f, indent=1)


def main(argv):
    if len(argv) >= 3 and argv[1] == "make-qwen":
        return make_qwen(argv[2])
    if len(argv) >= 4 and argv[1] == "make-from-gguf":
        return make_from_gguf(argv[2], argv[3])
    if len(argv) >= 2 and argv[1] == "membw":
        return membw()
    if len(argv) >= 3 and argv[1] == "bench":
        opts = {"--batches": "1,8", "--train-batches": "1", "--repeats": "3", "--json": None,
                "--decode-lora": "0"}
        rest = argv[3:]
        for k, v in zip(rest[::2], rest[1::2]):
            if k not in opts:
                sys.exit(f"unknown option {k}")
            opts[k] = v
        ints = lambda s: [int(x) for x in s.split(",") if x]
        return bench(argv[2], ints(opts["--batches"]), ints(opts["--train-batches"]),
                     int(opts["--repeats"]), opts["--json"], opts["--decode-lora"] == "1")
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
