"""Export the trained model (scripts/train/.cache/ckpt.pt) as a Hugging Face checkpoint in
assets/model/, with the official tensor names (the MTP module as model.layers.{L}.*), bf16
weights, the tokenizer, the training record, and reference outputs that transformers computes
on the exported weights (the Rust tests compare against them)."""
import json
import platform
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import AutoTokenizer, DeepseekV3ForCausalLM

import train as T

PROMPTS = ["Once upon a time", "Lily and her dog went to the park. They"]
CHATS = [[{"role": "user", "content": "Tell me a story about a cat."}]]
GREEDY = 32


def official_state(model, mtp, L):
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    p = f"model.layers.{L}."
    sd[p + "embed_tokens.weight"] = sd["model.embed_tokens.weight"].clone()
    sd[p + "shared_head.head.weight"] = sd["lm_head.weight"].clone()
    for k, v in mtp.state_dict().items():
        if k.startswith("block."):
            sd[p + k[len("block."):]] = v.detach()
        elif k == "norm.weight":
            sd[p + "shared_head.norm.weight"] = v.detach()
        else:
            sd[p + k] = v.detach()
    out = {}
    for k, v in sd.items():
        if "rotary_emb" in k:
            continue
        out[k] = v.float().contiguous() if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16).contiguous()
    return out


@torch.no_grad()
def references(out_dir, val):
    tok = AutoTokenizer.from_pretrained(out_dir)
    model = DeepseekV3ForCausalLM.from_pretrained(out_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()

    def greedy(ids):
        x = torch.tensor([ids])
        out = model(input_ids=x, use_cache=True)
        past, gen = out.past_key_values, []
        for _ in range(GREEDY):
            nxt = int(out.logits[0, -1].argmax())
            gen.append(nxt)
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
        return gen

    cases = []
    for p in PROMPTS:
        ids = tok(p)["input_ids"]
        g = greedy(ids)
        cases.append({"prompt": p, "prompt_ids": ids, "greedy_ids": g, "greedy_text": tok.decode(g, skip_special_tokens=True)})
    for m in CHATS:
        ids = tok.apply_chat_template(m, add_generation_prompt=True)
        g = greedy(ids)
        cases.append({"messages": m, "prompt_ids": ids, "greedy_ids": g, "greedy_text": tok.decode(g, skip_special_tokens=True)})
    # Held-out loss on fixed windows of the validation stream.
    windows = []
    for start in (0, len(val) // 3, 2 * len(val) // 3):
        ids = val[start:start + T.SEQ + 1].astype(np.int64)
        x = torch.from_numpy(ids[None])
        logits = model(input_ids=x[:, :-1]).logits[0]
        loss = F.cross_entropy(logits, x[0, 1:]).item()
        windows.append({"ids": ids.tolist(), "loss": loss})
    return {"greedy_steps": GREEDY, "cases": cases, "heldout": windows,
            "uniform_loss": float(np.log(T.CONFIG["vocab_size"]))}


def export(args):
    saved = torch.load(T.CACHE / "ckpt.pt", weights_only=False, map_location="cpu")
    cfg, model, mtp = T.init_model()
    model.load_state_dict(saved["model"])
    mtp.load_state_dict(saved["mtp"])
    state = saved["state"]
    out = T.OUT
    out.mkdir(parents=True, exist_ok=True)
    L = cfg.num_hidden_layers
    save_file(official_state(model, mtp, L), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(T.CONFIG, indent=2) + "\n")
    T.write_tokenizer_files(out)
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": T.BOS, "eos_token_id": T.EOS, "do_sample": True, "temperature": 0.7, "top_p": 0.95}, indent=2) + "\n")
    val = np.load(T.CACHE / "val.npy")
    ref = references(out, val)
    (out / "reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    stats_path = T.CACHE / "corpus" / "stats.json"
    record = {
        "what": "DeepRust's embedded default model: DeepSeek-V3 architecture, trained from scratch by scripts/train/run.sh",
        "hardware": {"machine": platform.machine(), "processor": platform.processor() or platform.uname().processor,
                     "cpus": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(),
                     "device": str(T.DEV), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "corpus": json.loads(stats_path.read_text()) if stats_path.exists() else None,
        "steps": state["step"], "tokens": state["tokens"], "train_seconds": round(state["seconds"], 1),
        "tokens_per_second": round(state["tokens"] / max(state["seconds"], 1e-9)),
        "batch": [args.batch, T.SEQ], "lr": args.lr, "mtp_weight": args.mtp_weight, "bias_rate": args.bias_rate,
        "parameters": {"total": sum(v.numel() for k, v in official_state(model, mtp, L).items() if not k.startswith(f"model.layers.{L}.")),
                       "mtp": sum(v.numel() for k, v in official_state(model, mtp, L).items() if k.startswith(f"model.layers.{L}."))},
        "val_loss_final": state["val"][-1] if state["val"] else None,
        "heldout_loss_reference": [w["loss"] for w in ref["heldout"]],
        "uniform_loss": ref["uniform_loss"],
        "loss_curve": state["log"],
        "val_curve": state["val"],
        "samples": [c["greedy_text"] for c in ref["cases"]],
    }
    (out / "training.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: record[k] for k in ("steps", "tokens", "train_seconds", "val_loss_final", "heldout_loss_reference", "samples")}, indent=1, ensure_ascii=False))
