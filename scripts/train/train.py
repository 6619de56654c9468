"""Train DeepRust's embedded default model: a small model of exactly the DeepSeek-V3
architecture (MLA with q_lora and the latent cache, DeepSeekMoE with sigmoid routing,
bias-based balancing and expert groups, a dense first layer, YaRN, one MTP module).

    scripts/train/run.sh [--hours H] [--export-only]

Steps: build the corpus (scripts/train/corpus.py), train a byte-level BPE tokenizer, train the
model with transformers' DeepseekV3ForCausalLM plus an MTP module (resumable: checkpoints in
scripts/train/.cache/), then export a real Hugging Face checkpoint to assets/model/ with
reference outputs computed by transformers on the exported (bf16-rounded) weights.
"""
import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, pre_tokenizers, trainers
from transformers import AutoTokenizer, DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = HERE / ".cache"
OUT = ROOT / "assets" / "model"
DEEPSEEK_TOKENIZER = ROOT / "assets" / "tokenizers" / "deepseek-v3"
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402

SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜▁pad▁｜>"]
BOS, EOS = 0, 1
SEQ = 256
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")

CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 4096,
    "hidden_size": 192,
    "intermediate_size": 512,
    "moe_intermediate_size": 128,
    "num_hidden_layers": 4,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "q_lora_rank": 96,
    "kv_lora_rank": 48,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16,
    "v_head_dim": 32,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 4,
    "topk_group": 2,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "aux_loss_alpha": 0.001,
    "seq_aux": True,
    "ep_size": 1,
    "num_nextn_predict_layers": 1,
    "max_position_embeddings": 1024,
    "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": SEQ,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
    "bos_token_id": BOS,
    "eos_token_id": EOS,
    "pretraining_tp": 1,
    "use_cache": True,
    "torch_dtype": "bfloat16",
    "transformers_version": transformers.__version__,
}


# ---------------------------------------------------------------------------------------------- data
def build_tokenizer(train_path: Path):
    path = CACHE / "tokenizer.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    ds = json.loads((DEEPSEEK_TOKENIZER / "tokenizer.json").read_text(encoding="utf-8"))
    skeleton = dict(ds, added_tokens=[], model={"type": "BPE", "vocab": {}, "merges": []})
    tok = Tokenizer.from_str(json.dumps(skeleton))
    trainer = trainers.BpeTrainer(vocab_size=CONFIG["vocab_size"], special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)

    def texts(limit=25_000_000):
        n = 0
        with open(train_path, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                t = d["text"] if "text" in d else "\n".join(m["content"] for m in d["messages"])
                n += len(t)
                yield t
                if n > limit:
                    return
    tok.train_from_iterator(texts(), trainer)
    assert tok.get_vocab_size(with_added_tokens=True) == CONFIG["vocab_size"]
    assert [tok.token_to_id(t) for t in SPECIALS] == list(range(len(SPECIALS)))
    tok.save(str(path))
    return tok


def write_tokenizer_files(out_dir: Path):
    ds_cfg = json.loads((DEEPSEEK_TOKENIZER / "tokenizer_config.json").read_text(encoding="utf-8"))
    (out_dir / "tokenizer.json").write_bytes((CACHE / "tokenizer.json").read_bytes())
    cfg = {
        "add_bos_token": True, "add_eos_token": False,
        "bos_token": SPECIALS[0], "eos_token": SPECIALS[1], "pad_token": SPECIALS[1], "unk_token": None,
        "clean_up_tokenization_spaces": False, "legacy": True,
        "model_max_length": CONFIG["max_position_embeddings"],
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": ds_cfg["chat_template"],
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def encode_split(name: str, hf_tok) -> np.ndarray:
    """All documents of a split as one uint16 token stream: BOS text EOS, or a rendered chat."""
    path = CACHE / f"{name}.npy"
    if path.exists():
        return np.load(path)
    out = []
    with open(CACHE / "corpus" / f"{name}.jsonl", encoding="utf-8") as f:
        batch = []
        for line in f:
            d = json.loads(line)
            if "messages" in d:
                out.extend(hf_tok.apply_chat_template(d["messages"], tokenize=True))
            else:
                batch.append(d["text"])
                if len(batch) == 1024:
                    for ids in hf_tok(batch, add_special_tokens=False)["input_ids"]:
                        out.extend([BOS] + ids + [EOS])
                    batch = []
        for ids in (hf_tok(batch, add_special_tokens=False)["input_ids"] if batch else []):
            out.extend([BOS] + ids + [EOS])
    arr = np.array(out, dtype=np.uint16)
    np.save(path, arr)
    return arr


# --------------------------------------------------------------------------------------------- model
class Mtp(torch.nn.Module):
    """DeepSeek-V3 §2.2 with depth 1: from the main model's final hidden state at i and the
    embedding of token i+1, predict token i+2. Embedding and output head are the main model's."""

    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.enorm = DeepseekV3RMSNorm(d, eps=config.rms_norm_eps)
        self.hnorm = DeepseekV3RMSNorm(d, eps=config.rms_norm_eps)
        self.eh_proj = torch.nn.Linear(2 * d, d, bias=False)
        self.block = DeepseekV3DecoderLayer(config, layer_idx=config.num_hidden_layers)
        self.norm = DeepseekV3RMSNorm(d, eps=config.rms_norm_eps)

    def forward(self, model, hidden, next_ids, position_embeddings, mask):
        e = model.model.embed_tokens(next_ids)
        x = self.eh_proj(torch.cat([self.enorm(e), self.hnorm(hidden)], dim=-1))
        x = self.block(x, attention_mask=mask, position_embeddings=position_embeddings)
        x = x[0] if isinstance(x, tuple) else x
        return model.lm_head(self.norm(x))


def init_model(seed=0):
    torch.manual_seed(seed)
    cfg = DeepseekV3Config(**json.loads(json.dumps(CONFIG)))
    cfg._attn_implementation = "sdpa"
    model = DeepseekV3ForCausalLM(cfg)
    mtp = Mtp(cfg)
    for m in mtp.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=cfg.initializer_range)
    for layer in model.model.layers:
        if hasattr(layer.mlp, "gate"):
            torch.nn.init.normal_(layer.mlp.gate.weight, std=cfg.initializer_range)
    torch.nn.init.normal_(mtp.block.mlp.gate.weight, std=cfg.initializer_range)
    return cfg, model, mtp


def routers(model, mtp):
    return [l.mlp.gate for l in model.model.layers if hasattr(l.mlp, "gate")] + [mtp.block.mlp.gate]


class LoadMeter:
    """Counts tokens per expert in each router (for auxiliary-loss-free balancing)."""

    def __init__(self, gates):
        self.counts = [torch.zeros(g.n_routed_experts, device=DEV) for g in gates]
        for i, g in enumerate(gates):
            g.register_forward_hook(self._hook(i))

    def _hook(self, i):
        def hook(_m, _args, out):
            self.counts[i] += torch.bincount(out[0].flatten(), minlength=self.counts[i].numel()).float()
        return hook

    def reset(self):
        for c in self.counts:
            c.zero_()


def causal_mask(t):
    m = torch.full((t, t), float("-inf"), device=DEV).triu(1)
    return m[None, None]


def losses(cfg, model, mtp, x, y, y2):
    """Main next-token loss and MTP next-next-token loss on a batch x [B, T]."""
    # The MTP module takes the main model's final normed hidden state (as vLLM and SGLang feed it).
    hidden = model.model(input_ids=x, use_cache=False).last_hidden_state
    main = F.cross_entropy(model.lm_head(hidden).float().reshape(-1, cfg.vocab_size), y.reshape(-1))
    pos = torch.arange(x.shape[1], device=DEV)[None]
    pe = model.model.rotary_emb(hidden, pos)
    # position i combines h_i with emb(t_{i+1}) = y[:, i] and predicts t_{i+2} = y2[:, i]
    logits2 = mtp(model, hidden[:, :-1], y[:, :-1], tuple(p[:, :-1] for p in pe), causal_mask(x.shape[1] - 1))
    extra = F.cross_entropy(logits2.float().reshape(-1, cfg.vocab_size), y2[:, :-1].reshape(-1))
    return main, extra


def batches(data, batch, rng):
    while True:
        starts = rng.integers(0, len(data) - SEQ - 2, size=batch)
        chunk = np.stack([data[s:s + SEQ + 2] for s in starts]).astype(np.int64)
        t = torch.from_numpy(chunk).to(DEV)
        yield t[:, :SEQ], t[:, 1:SEQ + 1], t[:, 2:SEQ + 2]


@torch.no_grad()
def evaluate(cfg, model, mtp, val, n=32):
    model.eval(); mtp.eval()
    g = np.random.default_rng(1234)
    it = batches(val, 8, g)
    tot, tot2 = 0.0, 0.0
    for _ in range(n // 8):
        x, y, y2 = next(it)
        a, b = losses(cfg, model, mtp, x, y, y2)
        tot += a.item(); tot2 += b.item()
    model.train(); mtp.train()
    return tot / (n // 8), tot2 / (n // 8)


# ---------------------------------------------------------------------------------------------- main
def train(args):
    CACHE.mkdir(exist_ok=True)
    if not (CACHE / "corpus" / "train.jsonl").exists():
        stats = corpus.build(CACHE / "corpus", seed=0, total_mb=args.corpus_mb)
        (CACHE / "corpus" / "stats.json").write_text(json.dumps(stats, indent=1))
    build_tokenizer(CACHE / "corpus" / "train.jsonl")
    tok_dir = CACHE / "tok"
    tok_dir.mkdir(exist_ok=True)
    write_tokenizer_files(tok_dir)
    hf_tok = AutoTokenizer.from_pretrained(tok_dir)
    train_ids, val_ids = encode_split("train", hf_tok), encode_split("val", hf_tok)
    print(f"tokens: train {len(train_ids):,} val {len(val_ids):,}", flush=True)

    torch.set_num_threads(args.threads)
    cfg, model, mtp = init_model()
    model.to(DEV)
    mtp.to(DEV)
    gates = routers(model, mtp)
    meter = LoadMeter(gates)
    params = list(model.parameters()) + [p for n, p in mtp.named_parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    state = {"step": 0, "log": [], "val": [], "seconds": 0.0, "tokens": 0}
    ck = CACHE / "ckpt.pt"
    if ck.exists():
        saved = torch.load(ck, weights_only=False, map_location=DEV)
        model.load_state_dict(saved["model"]); mtp.load_state_dict(saved["mtp"]); opt.load_state_dict(saved["opt"])
        state = saved["state"]
        print(f"resumed at step {state['step']}", flush=True)
    rng = np.random.default_rng(state["step"] + 17)
    data = batches(train_ids, args.batch, rng)
    n_params = sum(p.numel() for p in params)
    print(f"parameters {n_params:,}; {args.batch}x{SEQ} tokens/step; steps {args.steps}; device {DEV}", flush=True)

    t0 = time.time()
    base_seconds = state["seconds"]
    while state["step"] < args.steps:
        step = state["step"]
        # Cosine decay over the step budget or the time budget, whichever runs out first.
        frac = step / args.steps
        if args.hours:
            frac = max(frac, state["seconds"] / (args.hours * 3600))
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, y2 = next(data)
        meter.reset()
        main, extra = losses(cfg, model, mtp, x, y, y2)
        loss = main + args.mtp_weight * extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        # Auxiliary-loss-free balancing (V3 §2.1.2): nudge each expert's bias toward equal load.
        with torch.no_grad():
            for g, c in zip(gates, meter.counts):
                g.e_score_correction_bias += args.bias_rate * torch.sign(c.mean() - c)
        state["step"] += 1
        state["tokens"] += x.numel()
        state["seconds"] = base_seconds + time.time() - t0
        if state["step"] % 10 == 0:
            state["log"].append([state["step"], round(main.item(), 4), round(extra.item(), 4)])
        if state["step"] % 50 == 0:
            rate = state["tokens"] / max(state["seconds"], 1e-9)
            print(f"step {state['step']} loss {main.item():.3f} mtp {extra.item():.3f} lr {lr:.2e} "
                  f"{rate:.0f} tok/s {state['seconds'] / 60:.1f} min", flush=True)
        if state["step"] % args.eval_every == 0 or state["step"] == args.steps:
            v = evaluate(cfg, model, mtp, val_ids)
            state["val"].append([state["step"], round(v[0], 4), round(v[1], 4)])
            print(f"  val loss {v[0]:.3f} mtp {v[1]:.3f}", flush=True)
            torch.save({"model": model.state_dict(), "mtp": mtp.state_dict(), "opt": opt.state_dict(), "state": state}, ck)
        if args.hours and state["seconds"] > args.hours * 3600:
            print("time budget reached", flush=True)
            break
    torch.save({"model": model.state_dict(), "mtp": mtp.state_dict(), "opt": opt.state_dict(), "state": state}, ck)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--hours", type=float, default=0.0, help="stop after this much training time")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--mtp-weight", type=float, default=0.3)
    ap.add_argument("--bias-rate", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--corpus-mb", type=float, default=100.0)
    args = ap.parse_args()
    if not args.export_only:
        train(args)
    import export  # noqa: E402  (scripts/train/export.py)
    export.export(args)


if __name__ == "__main__":
    main()
